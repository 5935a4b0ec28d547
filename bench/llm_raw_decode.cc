// llm_raw_decode: the raw LibTorch loop that the llm handler's continuous batching is compared
// against (issue 11: ">= 0.9x of a raw LibTorch decode loop over the same batch"). It does the
// work the server does for `batch` concurrent requests of `max_tokens` tokens each, with no
// engine around it:
//   one round = for each of the batch's prompts (BOS + prompt_bytes bytes), a prefill into
//   its own cache rows and the first token; then max_tokens - 1 decode steps of the whole
//   batch in one call each. Generated tokens per round: batch * max_tokens.
// As the engine (src/backend/llm_engine.cc) does it: inputs written in place into tensors
// allocated once (tokens [B], positions [B], and the ragged rows [N] and seq [N]: every
// sequence's rows back to back, N = sum(positions + 1), with each row's sequence index),
// the logits made contiguous float and the greedy token picked in plain C++ (argmax over the
// vocabulary, BOS and PAD excluded), the cache allocate()d for max_num_seqs * max_model_len
// rows, c10::InferenceMode, at::set_num_threads(threads) (the server's workers run with
// intra_op_threads = 1), and the server's malloc settings (tserve::TuneMallocForServer, as
// tserve's main calls it). What it leaves out is exactly the server: HTTP, JSON, the
// worker's queue, scheduling, text decoding, metrics.
//
// Why the malloc settings matter here: a decode step gathers each layer's K and V rows
// (index_select: N * d_model floats, some 0.7 MiB at batch 16 and 88 positions each). With
// glibc's defaults those blocks are fresh mmaps, freed at once, so every step faults their
// pages back in (14-26 us a page on the dev VM: docs/performance.md): at batch 16 and 128
// tokens the loop ran 2.4-3.3 ms a step without the tuning and 1.0-1.5 ms with it, so
// without it, it measured the allocator, not the engine. --malloc default keeps glibc's
// defaults to show it.
//
// Warm-up rounds run first (TorchScript's profiling executor specializes a method over its
// first calls; the allocator and the OpenMP pool settle), then `rounds` timed rounds; the
// best and median round are printed, with the decode steps alone and the prefills alone.
//
//   llm_raw_decode MODEL.pt [--batch 16] [--max-tokens 128] [--prompt-bytes 23]
//       [--rounds 5] [--warmup-rounds 1] [--threads 1] [--max-model-len 256]
//       [--malloc server|default] [--staggered] [--in-thread] [--json]
//
// --in-thread: the whole loop on a thread of its own, as a server's worker (its own malloc
// arena and OpenMP settings).
// --staggered: the loop a server at full load runs instead of rounds in lockstep. The
// sequences are at evenly spread points of their max_tokens (sequence b starts with
// b * max_tokens / batch tokens already generated), and one that ends is replaced at once
// by a new prompt (its prefill and first token between two steps), so the sequences' lengths
// differ at every step (with the model's earlier padded decode, rows [B, T], each step cost
// B times the longest; with the ragged one it costs the sum of the lengths, as lockstep
// rounds on average). A "round" is then batch * max_tokens tokens of this steady state.
//
// The first version (positional: MODEL.pt batch steps threads) measured decode steps only,
// with glibc's malloc defaults, from a cold start, over up to 200 steps: its figure fell
// with the steps (a step's attention reads every position so far: 3.3 ms/step at 50 steps,
// 6.9 at 200 on the 2-core dev VM) and was not comparable with the server's 64- or
// 128-token requests.

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/malloc_tuning.h"

namespace {

struct Options {
  const char* model = nullptr;
  int64_t batch = 16;
  int64_t max_tokens = 128;
  int64_t prompt_bytes = 23;
  int rounds = 5;
  int warmup_rounds = 1;
  int threads = 1;
  int64_t max_model_len = 256;
  bool json = false;
  bool tune_malloc = true;  // --malloc server (the default) or default
  bool staggered = false;
  bool in_thread = false;
};

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s MODEL.pt [--batch 16] [--max-tokens 128] [--prompt-bytes 23] "
               "[--rounds 5] [--warmup-rounds 1] [--threads 1] [--max-model-len 256] "
               "[--malloc server|default] [--staggered] [--in-thread] [--json]\n",
               argv0);
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> long long {
      if (i + 1 >= argc) Usage(argv[0]);
      char* end = nullptr;
      const long long v = std::strtoll(argv[++i], &end, 10);
      if (*end != '\0' || v < 0) Usage(argv[0]);
      return v;
    };
    if (arg == "--batch") {
      o.batch = value();
    } else if (arg == "--max-tokens") {
      o.max_tokens = value();
    } else if (arg == "--prompt-bytes") {
      o.prompt_bytes = value();
    } else if (arg == "--rounds") {
      o.rounds = static_cast<int>(value());
    } else if (arg == "--warmup-rounds") {
      o.warmup_rounds = static_cast<int>(value());
    } else if (arg == "--threads") {
      o.threads = static_cast<int>(value());
    } else if (arg == "--max-model-len") {
      o.max_model_len = value();
    } else if (arg == "--malloc" && i + 1 < argc) {
      const std::string v = argv[++i];
      if (v != "server" && v != "default") Usage(argv[0]);
      o.tune_malloc = v == "server";
    } else if (arg == "--staggered") {
      o.staggered = true;
    } else if (arg == "--in-thread") {
      o.in_thread = true;
    } else if (arg == "--json") {
      o.json = true;
    } else if (!arg.empty() && arg[0] != '-' && o.model == nullptr) {
      o.model = argv[i];
    } else {
      Usage(argv[0]);
    }
  }
  if (o.model == nullptr || o.batch < 1 || o.max_tokens < 1 || o.rounds < 1 || o.threads < 1 ||
      1 + o.prompt_bytes + o.max_tokens > o.max_model_len) {
    Usage(argv[0]);
  }
  return o;
}

struct Round {
  int64_t steps = 0;           // decode steps
  double seconds = 0;          // the whole round
  double prefill_seconds = 0;  // the batch's prefills (and first tokens)
  double decode_seconds = 0;   // the decode steps
  int64_t produced = 0;        // tokens generated (--staggered: a little over a round)
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

class RawLoop {
 public:
  explicit RawLoop(const Options& o) : o_(o) {
    module_ = torch::jit::load(o.model);
    module_.eval();
    c10::InferenceMode guard;
    vocab_ = module_.attr("vocab_size").toInt();
    bos_ = module_.attr("bos").toInt();
    pad_ = module_.attr("pad").toInt();
    module_.get_method("allocate")({c10::IValue(o.batch * o.max_model_len)});
    prefill_ = std::make_unique<torch::jit::Method>(module_.get_method("prefill"));
    decode_ = std::make_unique<torch::jit::Method>(module_.get_method("decode"));
    const auto longs = torch::TensorOptions().dtype(torch::kInt64);
    tokens_ = torch::zeros({o.batch}, longs);
    positions_ = torch::zeros({o.batch}, longs);
    rows_ = torch::zeros({o.batch * o.max_model_len}, longs);
    seq_ = torch::zeros({o.batch * o.max_model_len}, longs);
    prompt_tokens_ = 1 + o.prompt_bytes;
    prompt_.resize(static_cast<size_t>(prompt_tokens_));
    prompt_rows_.resize(static_cast<size_t>(prompt_tokens_));
    last_.resize(static_cast<size_t>(o.batch));
  }

  Round Run(int round) {
    c10::InferenceMode guard;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < o_.batch; ++b) Prefill(round, b);
    const auto t1 = std::chrono::steady_clock::now();
    int64_t* tokens = tokens_.data_ptr<int64_t>();
    int64_t* positions = positions_.data_ptr<int64_t>();
    int64_t* rows = rows_.data_ptr<int64_t>();
    int64_t* seq = seq_.data_ptr<int64_t>();
    for (int64_t step = 1; step < o_.max_tokens; ++step) {
      const int64_t position = prompt_tokens_ + step - 1;  // of the newest token
      int64_t total = 0;
      for (int64_t b = 0; b < o_.batch; ++b) {
        tokens[b] = last_[static_cast<size_t>(b)];
        positions[b] = position;
        for (int64_t t = 0; t <= position; ++t, ++total) {
          rows[total] = b * o_.max_model_len + t;
          seq[total] = b;
        }
      }
      at::Tensor logits =
          (*decode_)({tokens_, positions_, rows_.narrow(0, 0, total), seq_.narrow(0, 0, total)})
              .toTensor()
              .to(torch::kFloat)
              .contiguous();
      const float* data = logits.data_ptr<float>();
      for (int64_t b = 0; b < o_.batch; ++b)
        last_[static_cast<size_t>(b)] = Greedy(data + b * vocab_);
    }
    const auto t2 = std::chrono::steady_clock::now();
    Round r;
    r.steps = o_.max_tokens - 1;
    r.produced = o_.batch * o_.max_tokens;
    r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    r.decode_seconds = std::chrono::duration<double>(t2 - t1).count();
    r.seconds = r.prefill_seconds + r.decode_seconds;
    return r;
  }

  // One round of the --staggered steady state (see the top of this file).
  Round RunStaggered(int round) {
    c10::InferenceMode guard;
    Round r;
    if (generated_.empty()) {
      generated_.resize(static_cast<size_t>(o_.batch));
      for (int64_t b = 0; b < o_.batch; ++b) {
        Prefill(round, b);
        generated_[static_cast<size_t>(b)] = 1 + b * o_.max_tokens / o_.batch;
      }
    }
    int64_t* tokens = tokens_.data_ptr<int64_t>();
    int64_t* positions = positions_.data_ptr<int64_t>();
    int64_t* rows = rows_.data_ptr<int64_t>();
    int64_t* seq = seq_.data_ptr<int64_t>();
    const int64_t target = o_.batch * o_.max_tokens;
    int64_t produced = 0;
    while (produced < target) {
      const auto t0 = std::chrono::steady_clock::now();
      int64_t total = 0;
      for (int64_t b = 0; b < o_.batch; ++b) {
        const int64_t position = prompt_tokens_ + generated_[static_cast<size_t>(b)] - 1;
        tokens[b] = last_[static_cast<size_t>(b)];
        positions[b] = position;
        for (int64_t t = 0; t <= position; ++t, ++total) {
          rows[total] = b * o_.max_model_len + t;
          seq[total] = b;
        }
      }
      at::Tensor logits =
          (*decode_)({tokens_, positions_, rows_.narrow(0, 0, total), seq_.narrow(0, 0, total)})
              .toTensor()
              .to(torch::kFloat)
              .contiguous();
      const float* data = logits.data_ptr<float>();
      for (int64_t b = 0; b < o_.batch; ++b) {
        last_[static_cast<size_t>(b)] = Greedy(data + b * vocab_);
        ++generated_[static_cast<size_t>(b)];
      }
      produced += o_.batch;
      ++r.steps;
      const auto t1 = std::chrono::steady_clock::now();
      for (int64_t b = 0; b < o_.batch; ++b) {
        if (generated_[static_cast<size_t>(b)] < o_.max_tokens) continue;
        Prefill(round, b);
        generated_[static_cast<size_t>(b)] = 1;
        ++produced;
      }
      const auto t2 = std::chrono::steady_clock::now();
      r.decode_seconds += std::chrono::duration<double>(t1 - t0).count();
      r.prefill_seconds += std::chrono::duration<double>(t2 - t1).count();
    }
    r.seconds = r.decode_seconds + r.prefill_seconds;
    r.produced = produced;
    return r;
  }

 private:
  // The prompt of sequence b (same length, different bytes: "round R seq B ..." padded)
  // into its cache rows, and its first token.
  void Prefill(int round, int64_t b) {
    const auto longs = torch::TensorOptions().dtype(torch::kInt64);
    // Prompts of the same length, different bytes ("round R seq B ..." padded).
    const std::string text = "round " + std::to_string(round) + " seq " + std::to_string(b) +
                             std::string(static_cast<size_t>(o_.prompt_bytes), ' ');
    prompt_[0] = bos_;
    for (int64_t i = 0; i < o_.prompt_bytes; ++i) {
      prompt_[static_cast<size_t>(i + 1)] =
          static_cast<unsigned char>(text[static_cast<size_t>(i)]);
    }
    for (int64_t p = 0; p < prompt_tokens_; ++p) {
      prompt_rows_[static_cast<size_t>(p)] = b * o_.max_model_len + p;
    }
    at::Tensor input = torch::from_blob(prompt_.data(), {prompt_tokens_}, longs);
    at::Tensor rows = torch::from_blob(prompt_rows_.data(), {prompt_tokens_}, longs);
    at::Tensor logits = (*prefill_)({input, rows}).toTensor().to(torch::kFloat).contiguous();
    last_[static_cast<size_t>(b)] = Greedy(logits.data_ptr<float>());
  }

  // The engine's temperature-0 sampling: argmax, BOS and PAD excluded, ties to the lowest.
  int64_t Greedy(const float* logits) const {
    int64_t best = -1;
    for (int64_t t = 0; t < vocab_; ++t) {
      if (t != bos_ && t != pad_ && (best < 0 || logits[t] > logits[best])) best = t;
    }
    return best;
  }

  const Options& o_;
  torch::jit::Module module_;
  std::unique_ptr<torch::jit::Method> prefill_;
  std::unique_ptr<torch::jit::Method> decode_;
  int64_t vocab_ = 0;
  int64_t bos_ = 0;
  int64_t pad_ = 0;
  int64_t prompt_tokens_ = 0;
  at::Tensor tokens_;
  at::Tensor positions_;
  at::Tensor rows_;  // ragged: the first N entries are decode's rows
  at::Tensor seq_;   // the sequence of each of those rows
  std::vector<int64_t> prompt_;
  std::vector<int64_t> prompt_rows_;
  std::vector<int64_t> last_;
  std::vector<int64_t> generated_;  // --staggered: tokens of each sequence so far
};

}  // namespace

int RunAll(const Options& o);

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  if (o.tune_malloc) tserve::TuneMallocForServer();
  // Before any parallel work: the inter-op pool cannot be resized once it has started.
  at::set_num_interop_threads(1);
  at::set_num_threads(o.threads);
  if (o.in_thread) {
    // As a server's worker: the whole loop on a thread of its own (its own malloc arena, its
    // own OpenMP settings, set as the worker does).
    Options inner = o;
    inner.in_thread = false;
    int rc = 0;
    std::thread worker([&] {
      at::set_num_threads(o.threads);
      rc = RunAll(inner);
    });
    worker.join();
    return rc;
  }
  return RunAll(o);
}

int RunAll(const Options& o) {
  RawLoop loop(o);
  auto run = [&](int round) { return o.staggered ? loop.RunStaggered(round) : loop.Run(round); };
  for (int i = 0; i < o.warmup_rounds; ++i) run(-1 - i);
  std::vector<double> rate, decode_rate, step_ms, prefill_ms;
  for (int i = 0; i < o.rounds; ++i) {
    const Round r = run(i);
    rate.push_back(static_cast<double>(r.produced) / r.seconds);
    decode_rate.push_back(r.steps > 0 ? static_cast<double>(o.batch * r.steps) / r.decode_seconds
                                      : 0.0);
    step_ms.push_back(r.steps > 0 ? 1e3 * r.decode_seconds / static_cast<double>(r.steps) : 0.0);
    prefill_ms.push_back(1e3 * r.prefill_seconds);
  }
  const double best = *std::max_element(rate.begin(), rate.end());
  const double median = Median(rate);
  const double median_decode = Median(decode_rate);
  const char* mode = o.staggered ? "staggered" : "lockstep";
  if (o.json) {
    std::printf(
        "{\"mode\": \"%s\", \"batch\": %lld, \"max_tokens\": %lld, \"prompt_tokens\": %lld, "
        "\"threads\": %d, \"rounds\": %d, \"tokens_per_s_best\": %.1f, "
        "\"tokens_per_s_median\": %.1f, \"decode_tokens_per_s_median\": %.1f, "
        "\"ms_per_step_median\": %.4f, \"prefill_ms_per_round_median\": %.3f}\n",
        mode, static_cast<long long>(o.batch), static_cast<long long>(o.max_tokens),
        static_cast<long long>(1 + o.prompt_bytes), o.threads, o.rounds, best, median,
        median_decode, Median(step_ms), Median(prefill_ms));
  } else {
    std::printf(
        "raw loop (%s): batch %lld, %lld tokens each (prompt %lld tokens), %d threads, %d "
        "rounds: %.0f tokens/s best, %.0f median; decode steps alone %.0f tokens/s median "
        "(%.3f ms/step); prefills %.2f ms per round\n",
        mode, static_cast<long long>(o.batch), static_cast<long long>(o.max_tokens),
        static_cast<long long>(1 + o.prompt_bytes), o.threads, o.rounds, best, median,
        median_decode, Median(step_ms), Median(prefill_ms));
  }
  return 0;
}
