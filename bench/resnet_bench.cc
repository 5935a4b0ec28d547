// The raw LibTorch baseline for bench/resnet_load.sh: the TorchScript model tserve's
// image_classifier serves, run in a plain loop on THREADS threads, each with its own copy
// of the module and 1 intra-op thread (as each tserve worker has), for every batch size and
// mode asked for:
//
//   forward  module.forward on a preprocessed [batch, 3, 224, 224] tensor (made once)
//   e2e      what image_classifier does per batch, minus HTTP and JSON: decode each JPEG,
//            resize the shorter side to 256 and centre-crop 224 (src/backend/image.h, the
//            same functions), normalize into a fresh batch tensor, forward, softmax, top 5
//
// Usage: resnet_bench MODEL.pt IMAGE [--batch 1,8] [--mode forward,e2e] [--threads 2]
//                     [--seconds 5] [--warmup 3] [--load-in-thread]
// --load-in-thread loads each thread's module on that thread (for every combination), as
// a tserve worker does, instead of on the main thread once: glibc's malloc then serves the
// weights from that thread's arena, which changes where the activations land.
// Prints one line per combination:
//   RESNET_RESULT mode=e2e batch=8 threads=2 batches=.. images=.. seconds=..
//                 images_per_s=.. batch_p50_ms=.. batch_p99_ms=..
// images_per_s sums each thread's rate over its whole batches (images it ran / time from
// the common start to the end of its last batch); latencies are per batch (one forward
// call, plus the preprocessing in e2e mode), across all threads; cores is the process's
// CPU time over the measured loops / their wall time, faults_per_image its minor page
// faults in them per image.
// <torch/script.h> for the module, <ATen/Parallel.h> for at::set_num_threads (as
// src/backend/torchscript_handlers.cc); nothing of the heavier <torch/torch.h>.
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "backend/image.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace backend = tserve::backend;

constexpr int kResizeSize = 256;
constexpr int kCropSize = 224;
constexpr int64_t kSample = int64_t{3} * kCropSize * kCropSize;

struct Options {
  std::string model;
  std::string image;
  std::vector<int> batches = {1, 8};
  std::vector<std::string> modes = {"forward", "e2e"};
  int threads = 2;
  double seconds = 5;
  int warmup = 3;
  bool load_in_thread = false;  // load each module on the thread that runs it, as tserve does
};

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

[[noreturn]] void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s MODEL.pt IMAGE [--batch 1,8] [--mode forward,e2e] [--threads N] "
               "[--seconds S] [--warmup N] [--load-in-thread]\n",
               argv0);
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(argv[0]);
      return argv[++i];
    };
    if (a == "--batch") {
      o.batches.clear();
      for (const auto& b : Split(value())) o.batches.push_back(std::atoi(b.c_str()));
    } else if (a == "--mode") {
      o.modes = Split(value());
    } else if (a == "--threads") {
      o.threads = std::atoi(value().c_str());
    } else if (a == "--seconds") {
      o.seconds = std::atof(value().c_str());
    } else if (a == "--warmup") {
      o.warmup = std::atoi(value().c_str());
    } else if (a == "--load-in-thread") {
      o.load_in_thread = true;
    } else if (!a.empty() && a[0] == '-') {
      Usage(argv[0]);
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2 || o.threads < 1 || o.seconds <= 0) Usage(argv[0]);
  for (int b : o.batches) {
    if (b < 1) Usage(argv[0]);
  }
  for (const auto& m : o.modes) {
    if (m != "forward" && m != "e2e") Usage(argv[0]);
  }
  o.model = positional[0];
  o.image = positional[1];
  return o;
}

// image_classifier's Preprocess for `batch` copies of one JPEG.
at::Tensor Preprocess(const std::string& jpeg, int batch) {
  at::Tensor input = at::empty({batch, 3, kCropSize, kCropSize}, at::TensorOptions(at::kFloat));
  float* data = input.data_ptr<float>();
  for (int i = 0; i < batch; ++i) {
    auto image = backend::DecodeImage(jpeg);
    if (!image.ok()) throw std::runtime_error(image.status().message());
    const backend::RgbImage crop =
        backend::ResizeShorterSideAndCenterCrop(*image, kResizeSize, kCropSize, kCropSize);
    backend::ToNormalizedChw(crop, backend::kImageNetMean, backend::kImageNetStd,
                             data + i * kSample);
  }
  return input;
}

// The process's CPU time (all threads) and minor page faults so far.
struct ProcUsage {
  double cpu_s = 0;
  long minflt = 0;
};
ProcUsage ProcessUsage() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
  return {sec(ru.ru_utime) + sec(ru.ru_stime), ru.ru_minflt};
}

// When the measured loops started (after every thread's warm-up), and the usage then.
struct StartMark {
  Clock::time_point time;
  ProcUsage usage;
};

struct Result {
  int64_t batches = 0;
  double seconds = 0;  // from the common start to the end of this thread's last batch
  std::vector<double> latencies_ms;
};

// One thread's loop: its own module, 1 intra-op thread, until `stop_at`.
void RunThread(const Options& o, const std::string& jpeg, const std::string& mode, int batch,
               torch::jit::Module& module, std::atomic<int>& ready, StartMark* start, Result* out) {
  at::set_num_threads(1);
  std::optional<torch::jit::Module> own;
  if (o.load_in_thread) {
    own = torch::jit::load(o.model);
    own->eval();
  }
  torch::jit::Module& m = own ? *own : module;
  c10::InferenceMode guard;
  const bool e2e = mode == "e2e";
  const at::Tensor fixed = Preprocess(jpeg, batch);
  auto once = [&] {
    at::Tensor input = e2e ? Preprocess(jpeg, batch) : fixed;
    std::vector<c10::IValue> inputs{input};
    at::Tensor output = m.forward(inputs).toTensor();
    if (e2e) {
      auto [values, indices] = at::topk(at::softmax(output, 1), 5, 1);
      values = values.to(at::kDouble).contiguous();
      indices = indices.to(at::kLong).contiguous();
      if (values.data_ptr<double>()[0] < 0 || indices.data_ptr<int64_t>()[0] < 0) {
        throw std::runtime_error("impossible softmax");
      }
    } else if (output.size(0) != batch) {
      throw std::runtime_error("unexpected output shape");
    }
  };
  for (int i = 0; i < o.warmup; ++i) once();
  // Start together: the last thread to finish its warm-up sets the start time.
  if (ready.fetch_add(1) + 1 == o.threads) {
    start->usage = ProcessUsage();
    start->time = Clock::now();
    ready.store(-1);
  }
  while (ready.load() != -1) std::this_thread::yield();
  const auto stop_at = start->time + std::chrono::duration<double>(o.seconds);
  while (true) {
    const auto t0 = Clock::now();
    if (t0 >= stop_at) break;
    once();
    const auto t1 = Clock::now();
    out->latencies_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    out->seconds = std::chrono::duration<double>(t1 - start->time).count();
    ++out->batches;
  }
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * v.size()));
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  std::ifstream in(o.image, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "resnet_bench: cannot read %s\n", o.image.c_str());
    return 1;
  }
  const std::string jpeg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    at::set_num_threads(1);
    // One module per thread, loaded here unless each thread loads its own.
    std::vector<torch::jit::Module> modules(static_cast<size_t>(o.threads));
    if (!o.load_in_thread) {
      for (auto& m : modules) {
        m = torch::jit::load(o.model);
        m.eval();
      }
    }
    for (int batch : o.batches) {
      for (const std::string& mode : o.modes) {
        std::vector<Result> results(static_cast<size_t>(o.threads));
        std::atomic<int> ready{0};
        StartMark start;
        std::vector<std::thread> threads;
        std::vector<std::exception_ptr> errors(static_cast<size_t>(o.threads));
        for (int t = 0; t < o.threads; ++t) {
          threads.emplace_back([&, t] {
            try {
              RunThread(o, jpeg, mode, batch, modules[static_cast<size_t>(t)], ready, &start,
                        &results[static_cast<size_t>(t)]);
            } catch (...) {
              errors[static_cast<size_t>(t)] = std::current_exception();
              if (ready.fetch_add(1) + 1 == o.threads) ready.store(-1);
            }
          });
        }
        for (auto& t : threads) t.join();
        const ProcUsage end = ProcessUsage();
        const double wall = std::chrono::duration<double>(Clock::now() - start.time).count();
        for (auto& e : errors) {
          if (e) std::rethrow_exception(e);
        }
        // Each thread's rate over its own whole batches (a thread that finished its last
        // batch early does not idle into the denominator), summed.
        int64_t batches = 0;
        double seconds = 0, images_per_s = 0;
        std::vector<double> all;
        for (const Result& r : results) {
          batches += r.batches;
          seconds = std::max(seconds, r.seconds);
          if (r.seconds > 0) images_per_s += static_cast<double>(r.batches * batch) / r.seconds;
          all.insert(all.end(), r.latencies_ms.begin(), r.latencies_ms.end());
        }
        const int64_t images = batches * batch;
        std::printf(
            "RESNET_RESULT mode=%s batch=%d threads=%d batches=%lld images=%lld seconds=%.3f "
            "images_per_s=%.2f batch_p50_ms=%.2f batch_p99_ms=%.2f cores=%.2f "
            "faults_per_image=%.1f\n",
            mode.c_str(), batch, o.threads, static_cast<long long>(batches),
            static_cast<long long>(images), seconds, images_per_s, Percentile(all, 50),
            Percentile(all, 99), (end.cpu_s - start.usage.cpu_s) / wall,
            images > 0 ? static_cast<double>(end.minflt - start.usage.minflt) / images : 0.0);
        std::fflush(stdout);
      }
    }
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "resnet_bench: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "resnet_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
