// llm_raw_decode: the raw LibTorch decode loop that the llm handler's continuous batching is
// compared against (issue 11: ">= 0.9x of a raw LibTorch loop"): the demo LLM
// (scripts/demo_llm.py), 16 prompts prefilled into their own cache rows, then N greedy decode
// steps of the whole batch in one call each (argmax in LibTorch, inputs rebuilt in place), no
// engine around it. Prints tokens/s.
//
//   llm_raw_decode MODEL.pt [batch=16] [steps=200] [threads=1]

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.pt [batch=16] [steps=200] [threads=1]\n", argv[0]);
    return 2;
  }
  const int64_t batch = argc > 2 ? std::atoi(argv[2]) : 16;
  const int64_t steps = argc > 3 ? std::atoi(argv[3]) : 200;
  at::set_num_threads(argc > 4 ? std::atoi(argv[4]) : 1);
  constexpr int64_t kMaxLen = 256;
  torch::jit::Module m = torch::jit::load(argv[1]);
  m.eval();
  c10::InferenceMode guard;
  m.get_method("allocate")({c10::IValue(batch * kMaxLen)});
  torch::jit::Method prefill = m.get_method("prefill");
  torch::jit::Method decode = m.get_method("decode");
  const int64_t bos = m.attr("bos").toInt();

  at::Tensor tokens = torch::zeros({batch}, torch::kInt64);
  at::Tensor positions = torch::zeros({batch}, torch::kInt64);
  at::Tensor base = torch::arange(batch, torch::kInt64).mul_(kMaxLen).unsqueeze(1);  // [B, 1]
  int64_t prompt_len = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const std::string prompt = "throughput " + std::to_string(b);
    std::vector<int64_t> ids{bos};
    for (char c : prompt) ids.push_back(static_cast<unsigned char>(c));
    // Same length for all (as the engine bench's prompts): pad with spaces.
    while (ids.size() < 14) ids.push_back(' ');
    prompt_len = static_cast<int64_t>(ids.size());
    at::Tensor rows = torch::arange(prompt_len, torch::kInt64).add_(b * kMaxLen);
    at::Tensor logits = prefill({torch::tensor(ids), rows}).toTensor();
    tokens[b] = logits.argmax();
    positions[b] = prompt_len;
  }
  if (prompt_len + steps > kMaxLen) {
    std::fprintf(stderr, "at most %lld steps\n", static_cast<long long>(kMaxLen - prompt_len));
    return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t width = prompt_len + s + 1;
    at::Tensor rows = base + torch::arange(width, torch::kInt64).unsqueeze(0);
    at::Tensor logits = decode({tokens, positions, rows}).toTensor();
    tokens = logits.argmax(1);
    positions.add_(1);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("raw decode: batch %lld, %lld steps, %.0f tokens/s, %.3f ms/step\n",
              static_cast<long long>(batch), static_cast<long long>(steps),
              static_cast<double>(batch * steps) / seconds, 1e3 * seconds / steps);
  return 0;
}
