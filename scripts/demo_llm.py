"""The demo LLM of llm.mar: a tiny byte-level causal transformer with seeded random weights,
scripted to TorchScript so that C++ (the `llm` handler, src/backend/llm_engine.h) owns the
decode loop. Imported by make_demo_models.py (which documents the archive); needs torch.

Vocabulary: 259 tokens, no tokenizer: 0..255 are the bytes of UTF-8 text, 256 BOS (first
token of every prompt), 257 EOS, 258 PAD (never produced: the engine masks BOS and PAD).
Architecture: learned token and position embeddings (max_positions 1024), 2 pre-LayerNorm
blocks (d_model 128, 4 heads, GELU MLP 512), final LayerNorm, linear head to the vocabulary.
Weights are random (torch.manual_seed(0)); so that the gibberish is readable, the head's bias
is 0 for printable ASCII, '\\n' and EOS and -20 for every other byte (they stay possible, at a
negligible probability, at a high temperature: the engine decodes any byte sequence to valid
UTF-8). Greedy decoding ends on EOS after some 20-80 tokens.

The KV cache is paged, as vLLM's: k_cache and v_cache are [layers, rows, d_model] buffers,
one row per token position, allocated by the engine (`allocate`) and handed out in blocks of
block_size rows; the engine tells the model which rows hold each sequence's positions.

TorchScript interface (all tensors int64 and 1-D unless said; no autograd is needed):
  allocate(rows: int) -> None
      (Re)allocates the cache for `rows` positions, zeroed.
  prefill(tokens: Tensor[L], rows: Tensor[L]) -> Tensor[vocab] (float)
      Runs a prompt: writes the K/V of positions 0..L-1 to cache rows `rows` and returns the
      logits of the last position (the distribution of the first generated token).
  decode(tokens: Tensor[B], positions: Tensor[B], rows: Tensor[N], seq: Tensor[N])
          -> Tensor[B, vocab]
      One step for B sequences, ragged (no padding): token b sits at positions[b]; `rows`
      holds the cache rows of positions 0..positions[b] of sequence 0, then of sequence 1,
      ... (N = sum(positions + 1)), and seq[n] is the sequence (0..B-1) of rows[n]. Writes
      each token's K/V to its own position's row (the last of its sequence's rows), attends
      to positions 0..positions[b] of its own sequence (a softmax per sequence), and returns
      the next-token logits of each. The cost follows N, not B times the longest sequence.
  forward(tokens: Tensor[L]) -> Tensor[L, vocab]
      Every position's logits of one sequence without the cache (a reference for tests).
  Attributes (int): vocab_size, bos, eos, pad, max_positions.
"""

import math

import torch
from torch import Tensor, nn

VOCAB_SIZE = 259
BOS = 256
EOS = 257
PAD = 258
MAX_POSITIONS = 1024
D_MODEL = 128
HEADS = 4
LAYERS = 2
FF = 512


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(D_MODEL)
        self.qkv = nn.Linear(D_MODEL, 3 * D_MODEL)
        self.proj = nn.Linear(D_MODEL, D_MODEL)
        self.ln2 = nn.LayerNorm(D_MODEL)
        self.fc1 = nn.Linear(D_MODEL, FF)
        self.fc2 = nn.Linear(FF, D_MODEL)

    def mlp(self, x: Tensor) -> Tensor:
        return self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.vocab_size = VOCAB_SIZE
        self.bos = BOS
        self.eos = EOS
        self.pad = PAD
        self.max_positions = MAX_POSITIONS
        self.d_model = D_MODEL
        self.heads = HEADS
        self.head_dim = D_MODEL // HEADS
        self.num_layers = LAYERS
        self.embed = nn.Embedding(VOCAB_SIZE, D_MODEL)
        self.pos = nn.Embedding(MAX_POSITIONS, D_MODEL)
        self.blocks = nn.ModuleList([Block() for _ in range(LAYERS)])
        self.ln_f = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, VOCAB_SIZE)
        # Not saved: the engine allocates the cache for its settings.
        self.register_buffer("k_cache", torch.zeros(LAYERS, 0, D_MODEL), persistent=False)
        self.register_buffer("v_cache", torch.zeros(LAYERS, 0, D_MODEL), persistent=False)

    @torch.jit.export
    def allocate(self, rows: int) -> None:
        self.k_cache = torch.zeros(self.num_layers, rows, self.d_model)
        self.v_cache = torch.zeros(self.num_layers, rows, self.d_model)

    def _attend_all(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Causal self-attention over one sequence's [L, d_model] q, k, v."""
        n = q.size(0)
        q = q.view(n, self.heads, self.head_dim).transpose(0, 1)
        k = k.view(n, self.heads, self.head_dim).transpose(0, 1)
        v = v.view(n, self.heads, self.head_dim).transpose(0, 1)
        s = torch.matmul(q, k.transpose(1, 2)) / math.sqrt(self.head_dim)
        causal = torch.ones(n, n, dtype=torch.bool).triu(1)
        s = s.masked_fill(causal, float("-inf"))
        return torch.matmul(torch.softmax(s, dim=-1), v).transpose(0, 1).reshape(n, self.d_model)

    @torch.jit.export
    def prefill(self, tokens: Tensor, rows: Tensor) -> Tensor:
        n = tokens.size(0)
        x = self.embed(tokens) + self.pos(torch.arange(n))
        i = 0
        for block in self.blocks:
            q, k, v = block.qkv(block.ln1(x)).split(self.d_model, dim=1)
            self.k_cache[i].index_copy_(0, rows, k)
            self.v_cache[i].index_copy_(0, rows, v)
            x = x + block.proj(self._attend_all(q, k, v))
            x = x + block.mlp(x)
            i += 1
        return self.head(self.ln_f(x[n - 1]))

    @torch.jit.export
    def decode(self, tokens: Tensor, positions: Tensor, rows: Tensor, seq: Tensor) -> Tensor:
        b = tokens.size(0)
        n = rows.size(0)
        x = self.embed(tokens) + self.pos(positions)
        lengths = positions + 1
        # Sequence b's rows end at the running total of the lengths: its last one (the new
        # token's position) is where the token's K/V goes.
        write = rows.index_select(0, torch.cumsum(lengths, 0) - 1)
        i = 0
        for block in self.blocks:
            q, k, v = block.qkv(block.ln1(x)).split(self.d_model, dim=1)
            self.k_cache[i].index_copy_(0, write, k)
            self.v_cache[i].index_copy_(0, write, v)
            kk = self.k_cache[i].index_select(0, rows).view(n, self.heads, self.head_dim)
            vv = self.v_cache[i].index_select(0, rows).view(n, self.heads, self.head_dim)
            qq = q.view(b, self.heads, self.head_dim).index_select(0, seq)
            s = (qq * kk).sum(-1) / math.sqrt(self.head_dim)  # [N, heads]
            # Softmax over each sequence's own rows (a segment softmax; segment_reduce as the
            # rows are contiguous per sequence), then the weighted sum of their V.
            m = torch.segment_reduce(s, "max", lengths=lengths)
            e = (s - m.index_select(0, seq)).exp()
            den = torch.segment_reduce(e, "sum", lengths=lengths)
            o = torch.zeros(b, self.heads, self.head_dim).index_add_(0, seq, e.unsqueeze(-1) * vv)
            x = x + block.proj((o / den.unsqueeze(-1)).reshape(b, self.d_model))
            x = x + block.mlp(x)
            i += 1
        return self.head(self.ln_f(x))

    def forward(self, tokens: Tensor) -> Tensor:
        n = tokens.size(0)
        x = self.embed(tokens) + self.pos(torch.arange(n))
        for block in self.blocks:
            q, k, v = block.qkv(block.ln1(x)).split(self.d_model, dim=1)
            x = x + block.proj(self._attend_all(q, k, v))
            x = x + block.mlp(x)
        return self.head(self.ln_f(x))


def build(path):
    """Writes the scripted demo LLM (seeded, deterministic) to `path`."""
    torch.manual_seed(0)
    model = TinyLM().eval()
    with torch.no_grad():
        bias = torch.full((VOCAB_SIZE,), -20.0)
        for c in list(range(32, 127)) + [ord("\n"), EOS]:
            bias[c] = 0.0
        model.head.bias.copy_(bias)
    torch.jit.script(model).save(path)
