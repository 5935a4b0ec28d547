#pragma once

// "llm": the built-in generative handler (tserve/handler.h, "Generation") that serves a
// TorchScript causal language model with iteration-level continuous batching. It lives in
// the TorchScript backend module (libtserve_torch.so) beside torchscript_handlers.h; this
// header includes no LibTorch.
//
// The model (the demo one: scripts/demo_llm.py) is byte-level: tokens 0..255 are the bytes
// of UTF-8 text, plus the special tokens named by its int attributes `bos`, `eos`, `pad`
// (and `vocab_size`, `max_positions`). Its TorchScript interface lets this engine own the
// decode loop over a paged KV cache (vLLM's layout: one cache row per token position,
// handed out in blocks of block_size rows):
//   allocate(rows: int)                                   the cache, zeroed
//   prefill(tokens [L], rows [L]) -> logits [vocab]       a prompt; the last position's logits
//   decode(tokens [B], positions [B], rows [N], seq [N]) -> [B, vocab]
//       one token for each of B sequences, ragged: `rows` is the cache rows of positions
//       0..positions[b] of sequence 0, then sequence 1, ... (N = sum(positions + 1)), and
//       seq[n] the sequence (0..B-1) of rows[n]; the token's K/V goes to the last row of its
//       sequence. A step costs what its sequences' lengths add up to, not B times the
//       longest (which a padded [B, T] layout would).
//
// Settings: the `llm:` section of the archive's model-config.yaml (read from
// ModelContext::model_dir; every key optional, all integers):
//   max_num_seqs     sequences running at once (slots), 1..kLlmMaxNumSeqs; default 16
//   max_model_len    tokens of one sequence, prompt (with BOS) + generated,
//                    2..the model's max_positions; default 256
//   block_size       cache rows per KV block, 1..max_model_len, dividing max_model_len;
//                    default 16
//   max_tokens       tokens generated when a request gives no max_tokens, 1..max_model_len-1;
//                    default 64 (clamped to what the prompt leaves, as vLLM's default)
//   kv_cache_blocks  blocks in the cache (vLLM's num_gpu_blocks), from max_model_len /
//                    block_size (one longest sequence) to max_num_seqs * max_model_len /
//                    block_size (the default: every slot at full length)
// Anything else in the section, a value that is not an integer or out of range, or a
// model without the interface above, makes Initialize throw std::runtime_error with a
// message naming the key (the worker fails to load with it).
//
// Requests (Sequence::body): a JSON object (content type application/json) with the fields
// of tserve/handler.h — prompt (string, required), max_tokens (int >= 1), temperature
// (number >= 0, default 1.0 as OpenAI's; 0 = greedy), top_p (0 < p <= 1, default 1), seed
// (integer), stop (a string or an array of at most kLlmMaxStopStrings strings of 1 to
// kLlmMaxStopStringBytes bytes), ignore_eos (bool); a null field counts as absent, other
// fields are ignored. Any other content type: the whole body is the prompt, with the
// defaults. Bad requests Fail(400, message) without taking a slot. The prompt is tokenized
// as BOS + its bytes; SetPromptTokens counts BOS. As vLLM: prompt tokens + max_tokens above
// max_model_len is a 400 ("This model's maximum context length is 256 tokens. However, you
// requested 300 tokens (...)"), and so is a prompt that leaves no room for one token.
//
// Scheduling:
//   Admit   reserves a slot and ceil((prompt tokens + max_tokens) / block_size) KV blocks
//           up front (so a running sequence never runs out; no preemption), or answers
//           kNoRoom when the free blocks are short; runs the prefill and samples the first
//           token (Emit, or Finish when it already ends the sequence). A cancelled sequence
//           is Finished kAbort instead of admitted.
//   Step    first Finishes kAbort every cancelled sequence; then one decode call over every
//           running sequence (one batch, inputs in tensors reused from step to step), one
//           sampled token each. A sequence ends (Finish, slot and blocks freed at once) on
//           EOS (kStop, unless ignore_eos), a stop string (kStop), max_tokens or
//           max_model_len (kLength). If the model throws, every running sequence is
//           released (not Finished: the worker fails them, as GenerativeHandler says) and
//           Step rethrows std::runtime_error.
//
// Sampling: BOS and PAD are never sampled. temperature 0: argmax (ties: the lowest token).
// Otherwise softmax(logits / temperature), restricted to the smallest set of most likely
// tokens whose probability reaches top_p, drawn with the sequence's own generator
// (std::mt19937_64 seeded with `seed`, or with a fixed engine seed plus the number of
// sequences admitted before it): one draw per token, so a request with a seed gives the same
// text whatever else runs in the batch.
//
// Text: every sampled token is reported in exactly one Emit with tokens = 1 (EOS and the
// token that completes a stop string too, as vLLM counts them in completion_tokens; their
// text is empty). Bytes are decoded incrementally (Utf8Decoder below): an incomplete
// trailing character is held back until it completes; invalid bytes become U+FFFD, as
// Python's bytes.decode(errors="replace"), so every Emit is valid UTF-8. With stop strings,
// the end of the text that could be the beginning of one is held back too, and emitted with
// a later token when it turns out not to be; when a stop string appears, the text before
// it is emitted and the sequence ends kStop, the stop string and anything after it
// unsent (as OpenAI and vLLM). Held-back text still pending at a kLength end is sent in an
// Emit with tokens = 0 before the Finish (an incomplete character as U+FFFD).
//
// Threads: Initialize, Admit and Step apply ModelContext::intra_op_threads
// (at::set_num_threads) and run under c10::InferenceMode. One instance is used by one
// thread at a time (its worker's).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "tserve/handler.h"

namespace tserve::backend {

// The most sequences one llm worker runs at once (max_num_seqs).
inline constexpr int kLlmMaxNumSeqs = 256;
// Stop strings a request may give, and the longest one (OpenAI allows 4).
inline constexpr int kLlmMaxStopStrings = 4;
inline constexpr size_t kLlmMaxStopStringBytes = 256;  // as the OpenAI routes (kMaxStopBytes)

// The "llm" handler (a Handler that is also a GenerativeHandler; its batch phases throw
// std::logic_error: the worker drives it through GenerativeHandler).
std::unique_ptr<Handler> MakeLlmHandler();

// Incremental UTF-8 decoding with replacement: bytes in, valid UTF-8 out. A character is
// appended once its last byte arrives; a byte that cannot continue the pending sequence
// ends it as one U+FFFD (the maximal-subpart rule of Unicode, WHATWG and Python's
// errors="replace") and is then read afresh.
class Utf8Decoder {
 public:
  // Appends to `out` whatever text `byte` completes.
  void Push(uint8_t byte, std::string* out);
  // Ends the input: an incomplete pending character is appended as U+FFFD.
  void Flush(std::string* out);
  // Whether bytes of an incomplete character are pending.
  bool pending() const { return needed_ > 0; }

 private:
  uint8_t buffer_[4] = {};
  int size_ = 0;    // bytes in buffer_
  int needed_ = 0;  // continuation bytes still expected
  uint8_t lower_ = 0x80;
  uint8_t upper_ = 0xBF;
};

}  // namespace tserve::backend
