#include "backend/llm_engine.h"

#include <ATen/Parallel.h>
#include <torch/script.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <exception>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/torchscript_handlers.h"
#include "common/json_limits.h"

namespace tserve::backend {

// ---- Utf8Decoder ------------------------------------------------------------------------

namespace {
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
}  // namespace

void Utf8Decoder::Push(uint8_t byte, std::string* out) {
  if (needed_ == 0) {
    if (byte <= 0x7F) {
      out->push_back(static_cast<char>(byte));
      return;
    }
    if (byte >= 0xC2 && byte <= 0xDF) {
      needed_ = 1;
    } else if (byte >= 0xE0 && byte <= 0xEF) {
      if (byte == 0xE0) lower_ = 0xA0;
      if (byte == 0xED) upper_ = 0x9F;
      needed_ = 2;
    } else if (byte >= 0xF0 && byte <= 0xF4) {
      if (byte == 0xF0) lower_ = 0x90;
      if (byte == 0xF4) upper_ = 0x8F;
      needed_ = 3;
    } else {
      out->append(kReplacement);
      return;
    }
    buffer_[0] = byte;
    size_ = 1;
    return;
  }
  if (byte < lower_ || byte > upper_) {
    // The pending bytes are a maximal subpart: one U+FFFD, then `byte` on its own.
    needed_ = 0;
    size_ = 0;
    lower_ = 0x80;
    upper_ = 0xBF;
    out->append(kReplacement);
    Push(byte, out);
    return;
  }
  lower_ = 0x80;
  upper_ = 0xBF;
  buffer_[size_++] = byte;
  if (--needed_ == 0) {
    out->append(reinterpret_cast<const char*>(buffer_), static_cast<size_t>(size_));
    size_ = 0;
  }
}

void Utf8Decoder::Flush(std::string* out) {
  if (needed_ == 0) return;
  needed_ = 0;
  size_ = 0;
  lower_ = 0x80;
  upper_ = 0xBF;
  out->append(kReplacement);
}

namespace {

using nlohmann::json;

constexpr const char* kName = "llm";
// The generator of a request without a seed: this plus the number of sequences admitted
// before it (so a server's answers are reproducible in arrival order).
constexpr uint64_t kDefaultSeed = 0x5EED'11A1'0000'0000ULL;
constexpr double kDefaultTemperature = 1.0;  // OpenAI's

struct Settings {
  int max_num_seqs = 16;
  int max_model_len = 256;
  int block_size = 16;
  int max_tokens = 64;
  int kv_cache_blocks = 0;  // 0: max_num_seqs * max_model_len / block_size
};

// A request's parsed payload.
struct Request {
  std::string prompt;
  std::optional<int64_t> max_tokens;
  double temperature = kDefaultTemperature;
  double top_p = 1.0;
  std::optional<int64_t> seed;
  std::vector<std::string> stop;
  bool ignore_eos = false;
};

// A running sequence: its slot's state.
struct Running {
  Sequence* sequence = nullptr;
  std::vector<int> blocks;
  std::vector<int64_t> rows;  // the cache row of each position it may use
  int prompt_tokens = 0;
  int max_tokens = 0;
  int generated = 0;       // tokens sampled so far
  int64_t last_token = 0;  // the newest sampled token, fed to the next decode
  double temperature = 0;
  double top_p = 1;
  bool ignore_eos = false;
  std::mt19937_64 rng;
  std::vector<std::string> stop;
  Utf8Decoder utf8;
  std::string held;  // decoded text not yet emitted (could begin a stop string)
};

// Errors this file raises with a complete message.
class LlmError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string TorchMessage(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
    std::string_view m = c10->what_without_backtrace();
    // Errors raised inside TorchScript end with the exception itself, after its traceback.
    if (m.find("Traceback of TorchScript") != std::string_view::npos) {
      while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.remove_suffix(1);
      const size_t newline = m.rfind('\n');
      if (newline != std::string_view::npos) m = m.substr(newline + 1);
    }
    return std::string(m);
  }
  return e.what();
}

void ApplyIntraOpThreads(int threads) {
  if (at::get_num_threads() != threads) at::set_num_threads(threads);
}

// ---- settings ---------------------------------------------------------------------------

Settings ReadSettings(const std::string& model_dir) {
  Settings s;
  const std::filesystem::path path = std::filesystem::path(model_dir) / "model-config.yaml";
  std::error_code ec;
  if (model_dir.empty() || !std::filesystem::is_regular_file(path, ec)) return s;
  YAML::Node doc;
  try {
    doc = YAML::LoadFile(path.string());
  } catch (const YAML::Exception& e) {
    throw LlmError(std::string(kName) + ": cannot read " + path.string() + ": " + e.what());
  }
  if (!doc.IsMap()) return s;
  const YAML::Node section = doc["llm"];
  if (!section || section.IsNull()) return s;
  if (!section.IsMap()) {
    throw LlmError(std::string(kName) +
                   ": model-config.yaml: llm must be a map of settings "
                   "(max_num_seqs: 16, ...)");
  }
  for (const auto& entry : section) {
    const std::string key = entry.first.as<std::string>("");
    int* target = nullptr;
    if (key == "max_num_seqs") {
      target = &s.max_num_seqs;
    } else if (key == "max_model_len") {
      target = &s.max_model_len;
    } else if (key == "block_size") {
      target = &s.block_size;
    } else if (key == "max_tokens") {
      target = &s.max_tokens;
    } else if (key == "kv_cache_blocks") {
      target = &s.kv_cache_blocks;
    } else {
      throw LlmError(std::string(kName) + ": model-config.yaml: llm." + key +
                     " is not a setting (max_num_seqs, max_model_len, block_size, max_tokens, "
                     "kv_cache_blocks)");
    }
    const YAML::Node& value = entry.second;
    long long v = 0;
    bool ok = value.IsScalar();
    if (ok) {
      const std::string text = value.Scalar();
      size_t used = 0;
      try {
        v = std::stoll(text, &used, 10);
      } catch (const std::exception&) {
        ok = false;
      }
      ok = ok && used == text.size() && v >= 1 && v <= std::numeric_limits<int>::max();
    }
    if (!ok) {
      throw LlmError(std::string(kName) + ": model-config.yaml: llm." + key +
                     " must be a positive integer");
    }
    *target = static_cast<int>(v);
  }
  return s;
}

void CheckSettings(Settings* s, int64_t max_positions) {
  auto fail = [](const std::string& what) {
    throw LlmError(std::string(kName) + ": model-config.yaml: llm." + what);
  };
  if (s->max_num_seqs > kLlmMaxNumSeqs) {
    fail("max_num_seqs must be at most " + std::to_string(kLlmMaxNumSeqs) + " (it is " +
         std::to_string(s->max_num_seqs) + ")");
  }
  if (s->max_model_len < 2 || s->max_model_len > max_positions) {
    fail("max_model_len must be from 2 to the model's max_positions, " +
         std::to_string(max_positions) + " (it is " + std::to_string(s->max_model_len) + ")");
  }
  if (s->block_size > s->max_model_len || s->max_model_len % s->block_size != 0) {
    fail("block_size must divide max_model_len (" + std::to_string(s->max_model_len) + "; it is " +
         std::to_string(s->block_size) + ")");
  }
  if (s->max_tokens >= s->max_model_len) {
    fail("max_tokens must be less than max_model_len (" + std::to_string(s->max_model_len) +
         "; it is " + std::to_string(s->max_tokens) + ")");
  }
  const int per_sequence = s->max_model_len / s->block_size;
  const int64_t full = int64_t{s->max_num_seqs} * per_sequence;
  if (s->kv_cache_blocks == 0) s->kv_cache_blocks = static_cast<int>(full);
  if (s->kv_cache_blocks < per_sequence || s->kv_cache_blocks > full) {
    fail("kv_cache_blocks must be from " + std::to_string(per_sequence) +
         " (one sequence of max_model_len) to " + std::to_string(full) +
         " (max_num_seqs of them) (it is " + std::to_string(s->kv_cache_blocks) + ")");
  }
}

// ---- requests ---------------------------------------------------------------------------

bool IsJson(std::string_view content_type) {
  const size_t semicolon = content_type.find(';');
  std::string_view type = content_type.substr(0, semicolon);
  while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
  while (!type.empty() && type.front() == ' ') type.remove_prefix(1);
  std::string lower(type);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower == "application/json";
}

// Parses a request, or returns the 400 message.
std::optional<std::string> ParseRequest(const Sequence& sequence, Request* r) {
  if (!IsJson(sequence.content_type())) {
    r->prompt = std::string(sequence.body());
    return std::nullopt;
  }
  StatusOr<json> parsed = ParseJsonLimited(sequence.body());
  if (!parsed.ok()) return "the body is not valid JSON: " + std::string(parsed.status().message());
  const json& body = *parsed;
  if (!body.is_object()) {
    return std::string(
        "the body must be a JSON object with a \"prompt\" (and generation "
        "settings)");
  }
  auto field = [&](const char* name) -> const json* {
    const auto it = body.find(name);
    if (it == body.end() || it->is_null()) return nullptr;
    return &*it;
  };
  const json* prompt = field("prompt");
  if (prompt == nullptr) return std::string("the request has no \"prompt\"");
  if (!prompt->is_string()) return std::string("\"prompt\" must be a string");
  r->prompt = prompt->get<std::string>();
  if (const json* v = field("max_tokens")) {
    if (!v->is_number_integer() || v->get<int64_t>() < 1) {
      return std::string("\"max_tokens\" must be an integer >= 1");
    }
    r->max_tokens = v->get<int64_t>();
  }
  if (const json* v = field("temperature")) {
    if (!v->is_number() || !(v->get<double>() >= 0) || !std::isfinite(v->get<double>())) {
      return std::string("\"temperature\" must be a number >= 0");
    }
    r->temperature = v->get<double>();
  }
  if (const json* v = field("top_p")) {
    if (!v->is_number() || !(v->get<double>() > 0 && v->get<double>() <= 1)) {
      return std::string("\"top_p\" must be a number in (0, 1]");
    }
    r->top_p = v->get<double>();
  }
  if (const json* v = field("seed")) {
    if (!v->is_number_integer()) return std::string("\"seed\" must be an integer");
    r->seed =
        v->is_number_unsigned() ? static_cast<int64_t>(v->get<uint64_t>()) : v->get<int64_t>();
  }
  if (const json* v = field("stop")) {
    const std::string shape = "\"stop\" must be a string or an array of at most " +
                              std::to_string(kLlmMaxStopStrings) + " strings";
    if (v->is_string()) {
      r->stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > static_cast<size_t>(kLlmMaxStopStrings)) return shape;
      for (const json& s : *v) {
        if (!s.is_string()) return shape;
        r->stop.push_back(s.get<std::string>());
      }
    } else {
      return shape;
    }
    for (const std::string& s : r->stop) {
      if (s.empty() || s.size() > kLlmMaxStopStringBytes) {
        return "each stop string must be 1 to " + std::to_string(kLlmMaxStopStringBytes) + " bytes";
      }
    }
  }
  if (const json* v = field("ignore_eos")) {
    if (!v->is_boolean()) return std::string("\"ignore_eos\" must be a boolean");
    r->ignore_eos = v->get<bool>();
  }
  return std::nullopt;
}

// ---- the handler ------------------------------------------------------------------------

class LlmHandler final : public Handler, public GenerativeHandler {
 public:
  void Initialize(const ModelContext& context) override {
    threads_ = std::max(1, context.intra_op_threads);
    ApplyIntraOpThreads(threads_);
    settings_ = ReadSettings(context.model_dir);
    if (context.serialized_file.empty()) {
      throw LlmError(std::string(kName) + ": model \"" + context.model_name +
                     "\" has no serialized file (a TorchScript .pt) in its manifest");
    }
    try {
      std::lock_guard<std::mutex> lock(TorchScriptLoadMutex());
      module_ = torch::jit::load(context.serialized_file);
    } catch (const std::exception& e) {
      throw LlmError(std::string(kName) + ": cannot load TorchScript model " +
                     context.serialized_file + ": " + TorchMessage(e));
    }
    module_.eval();
    try {
      vocab_size_ = module_.attr("vocab_size").toInt();
      bos_ = module_.attr("bos").toInt();
      eos_ = module_.attr("eos").toInt();
      pad_ = module_.attr("pad").toInt();
      max_positions_ = module_.attr("max_positions").toInt();
      (void)module_.get_method("allocate");
      (void)module_.get_method("prefill");
      // self + (tokens, positions, rows, seq): a model with another decode (the padded
      // rows [B, T] of earlier archives) would fail every step.
      if (module_.get_method("decode").function().getSchema().arguments().size() != 5) {
        throw LlmError("decode must take (tokens, positions, rows, seq)");
      }
    } catch (const std::exception& e) {
      throw LlmError(std::string(kName) + ": " + context.serialized_file +
                     " is not a model for the llm handler (it needs the int attributes "
                     "vocab_size, bos, eos, pad, max_positions and the methods allocate, "
                     "prefill, decode(tokens, positions, rows, seq)): " +
                     TorchMessage(e));
    }
    if (vocab_size_ < 257 || vocab_size_ > (1 << 20) || bos_ < 256 || bos_ >= vocab_size_ ||
        eos_ < 256 || eos_ >= vocab_size_ || pad_ < 256 || pad_ >= vocab_size_) {
      throw LlmError(std::string(kName) + ": " + context.serialized_file +
                     ": the vocabulary must be the 256 bytes then the special tokens (bos, "
                     "eos, pad in 256..vocab_size-1)");
    }
    CheckSettings(&settings_, max_positions_);

    const int blocks = settings_.kv_cache_blocks;
    free_blocks_.clear();
    for (int b = blocks - 1; b >= 0; --b) free_blocks_.push_back(b);
    slots_.assign(static_cast<size_t>(settings_.max_num_seqs), Running{});
    free_slots_.clear();
    for (int s = settings_.max_num_seqs - 1; s >= 0; --s) free_slots_.push_back(s);
    running_.clear();

    const int64_t max_batch = settings_.max_num_seqs;
    const auto longs = torch::TensorOptions().dtype(torch::kInt64);
    tokens_ = torch::zeros({max_batch}, longs);
    positions_ = torch::zeros({max_batch}, longs);
    rows_ = torch::zeros({max_batch * settings_.max_model_len}, longs);
    seq_ = torch::zeros({max_batch * settings_.max_model_len}, longs);
    probabilities_.reserve(static_cast<size_t>(vocab_size_));
    order_.reserve(static_cast<size_t>(vocab_size_));
    try {
      c10::InferenceMode guard;
      module_.get_method("allocate")({c10::IValue(int64_t{blocks} * settings_.block_size)});
      prefill_ = std::make_unique<torch::jit::Method>(module_.get_method("prefill"));
      decode_ = std::make_unique<torch::jit::Method>(module_.get_method("decode"));
    } catch (const std::exception& e) {
      throw LlmError(std::string(kName) + ": allocating the KV cache failed: " + TorchMessage(e));
    }
  }

  void Preprocess(Batch&) override { NotABatchHandler(); }
  void Inference(Batch&) override { NotABatchHandler(); }
  void Postprocess(Batch&) override { NotABatchHandler(); }

  int FreeSlots() const override { return static_cast<int>(free_slots_.size()); }

  GenerationStats Stats() const override {
    GenerationStats stats;
    stats.running = static_cast<int>(running_.size());
    stats.kv_blocks_total = settings_.kv_cache_blocks;
    stats.kv_blocks_used = settings_.kv_cache_blocks - static_cast<int>(free_blocks_.size());
    return stats;
  }

  AdmitResult Admit(Sequence* sequence) override {
    if (sequence->cancelled()) {
      sequence->Finish(FinishReason::kAbort);
      return AdmitResult::kEnded;
    }
    Request request;
    if (std::optional<std::string> error = ParseRequest(*sequence, &request)) {
      sequence->Fail(400, *error);
      return AdmitResult::kEnded;
    }
    const int64_t prompt_tokens = static_cast<int64_t>(request.prompt.size()) + 1;  // BOS
    const int64_t limit = settings_.max_model_len;
    int64_t max_tokens = 0;
    if (request.max_tokens) {
      max_tokens = *request.max_tokens;
      if (prompt_tokens + max_tokens > limit) {
        sequence->Fail(400, "This model's maximum context length is " + std::to_string(limit) +
                                " tokens. However, you requested " +
                                std::to_string(prompt_tokens + max_tokens) + " tokens (" +
                                std::to_string(prompt_tokens) + " in the prompt, " +
                                std::to_string(max_tokens) +
                                " for the completion). Please reduce the length of the "
                                "prompt or max_tokens.");
        return AdmitResult::kEnded;
      }
    } else {
      if (prompt_tokens >= limit) {
        sequence->Fail(400, "This model's maximum context length is " + std::to_string(limit) +
                                " tokens. However, your prompt is " +
                                std::to_string(prompt_tokens) +
                                " tokens, which leaves no room for the completion. Please "
                                "reduce the length of the prompt.");
        return AdmitResult::kEnded;
      }
      max_tokens = std::min<int64_t>(settings_.max_tokens, limit - prompt_tokens);
    }
    const int64_t total = prompt_tokens + max_tokens;
    const auto blocks_needed =
        static_cast<size_t>((total + settings_.block_size - 1) / settings_.block_size);
    if (free_slots_.empty() || blocks_needed > free_blocks_.size()) return AdmitResult::kNoRoom;

    const int slot = free_slots_.back();
    free_slots_.pop_back();
    Running& r = slots_[static_cast<size_t>(slot)];
    r = Running{};
    r.sequence = sequence;
    for (size_t i = 0; i < blocks_needed; ++i) {
      r.blocks.push_back(free_blocks_.back());
      free_blocks_.pop_back();
    }
    r.rows.resize(static_cast<size_t>(total));
    for (int64_t p = 0; p < total; ++p) {
      r.rows[static_cast<size_t>(p)] =
          int64_t{r.blocks[static_cast<size_t>(p / settings_.block_size)]} * settings_.block_size +
          p % settings_.block_size;
    }
    r.prompt_tokens = static_cast<int>(prompt_tokens);
    r.max_tokens = static_cast<int>(max_tokens);
    r.temperature = request.temperature;
    r.top_p = request.top_p;
    r.ignore_eos = request.ignore_eos;
    r.rng.seed(request.seed ? static_cast<uint64_t>(*request.seed) : kDefaultSeed + admitted_);
    ++admitted_;
    r.stop = std::move(request.stop);
    sequence->SetPromptTokens(r.prompt_tokens);

    int64_t token = 0;
    try {
      ApplyIntraOpThreads(threads_);
      c10::InferenceMode guard;
      std::vector<int64_t> tokens(static_cast<size_t>(prompt_tokens));
      tokens[0] = bos_;
      for (size_t i = 0; i < request.prompt.size(); ++i) {
        tokens[i + 1] = static_cast<unsigned char>(request.prompt[i]);
      }
      const auto longs = torch::TensorOptions().dtype(torch::kInt64);
      at::Tensor input = torch::from_blob(tokens.data(), {prompt_tokens}, longs);
      at::Tensor rows = torch::from_blob(r.rows.data(), {prompt_tokens}, longs);
      at::Tensor logits = (*prefill_)({input, rows}).toTensor().to(torch::kFloat).contiguous();
      if (logits.dim() != 1 || logits.size(0) != vocab_size_) {
        throw LlmError("prefill returned a tensor of shape " + c10::str(logits.sizes()) +
                       ", expected [" + std::to_string(vocab_size_) + "]");
      }
      token = Sample(r, logits.data_ptr<float>());
    } catch (const std::exception& e) {
      Release(slot);
      sequence->Fail(500, std::string(kName) + " prefill: " + TorchMessage(e));
      return AdmitResult::kEnded;
    }
    running_.push_back(slot);
    if (Advance(slot, token)) return AdmitResult::kEnded;
    return AdmitResult::kAdmitted;
  }

  void Step() override {
    for (size_t i = 0; i < running_.size();) {
      const int slot = running_[i];
      if (slots_[static_cast<size_t>(slot)].sequence->cancelled()) {
        Sequence* sequence = slots_[static_cast<size_t>(slot)].sequence;
        Release(slot);
        sequence->Finish(FinishReason::kAbort);
      } else {
        ++i;
      }
    }
    if (running_.empty()) return;

    const auto batch = static_cast<int64_t>(running_.size());
    int64_t* tokens = tokens_.data_ptr<int64_t>();
    int64_t* positions = positions_.data_ptr<int64_t>();
    int64_t* rows = rows_.data_ptr<int64_t>();
    int64_t* seq = seq_.data_ptr<int64_t>();
    int64_t total = 0;  // N: every running sequence's rows, back to back
    for (int64_t b = 0; b < batch; ++b) {
      const Running& r = slots_[static_cast<size_t>(running_[static_cast<size_t>(b)])];
      const int64_t length = r.prompt_tokens + r.generated;  // positions 0..length-1
      tokens[b] = r.last_token;
      positions[b] = length - 1;
      std::copy(r.rows.begin(), r.rows.begin() + length, rows + total);
      std::fill(seq + total, seq + total + length, b);
      total += length;
    }

    at::Tensor logits;
    try {
      ApplyIntraOpThreads(threads_);
      c10::InferenceMode guard;
      logits = (*decode_)({tokens_.narrow(0, 0, batch), positions_.narrow(0, 0, batch),
                           rows_.narrow(0, 0, total), seq_.narrow(0, 0, total)})
                   .toTensor();
      if (logits.dim() != 2 || logits.size(0) != batch || logits.size(1) != vocab_size_) {
        throw LlmError("decode returned a tensor of shape " + c10::str(logits.sizes()) +
                       ", expected [" + std::to_string(batch) + ", " + std::to_string(vocab_size_) +
                       "]");
      }
      logits = logits.to(torch::kFloat).contiguous();
    } catch (const std::exception& e) {
      // The worker fails every running sequence: forget them.
      while (!running_.empty()) Release(running_.back());
      throw std::runtime_error(std::string(kName) + " decode: " + TorchMessage(e));
    }
    const float* data = logits.data_ptr<float>();
    // Sample all first (each sequence's own generator), then advance: Advance may remove
    // finished slots from running_.
    std::vector<int>& order = step_slots_;
    order.assign(running_.begin(), running_.end());
    std::vector<int64_t>& sampled = step_tokens_;
    sampled.resize(order.size());
    for (size_t b = 0; b < order.size(); ++b) {
      sampled[b] = Sample(slots_[static_cast<size_t>(order[b])],
                          data + static_cast<int64_t>(b) * vocab_size_);
    }
    for (size_t b = 0; b < order.size(); ++b) Advance(order[b], sampled[b]);
  }

 private:
  [[noreturn]] static void NotABatchHandler() {
    throw std::logic_error(
        "llm: not a batch handler (it is driven through GenerativeHandler: Admit, Step)");
  }

  // Frees `slot` (its blocks too) and removes it from running_ (if there).
  void Release(int slot) {
    Running& r = slots_[static_cast<size_t>(slot)];
    for (int block : r.blocks) free_blocks_.push_back(block);
    r = Running{};
    free_slots_.push_back(slot);
    const auto it = std::find(running_.begin(), running_.end(), slot);
    if (it != running_.end()) running_.erase(it);
  }

  // The next token from one row of logits (see the header, "Sampling").
  int64_t Sample(Running& r, const float* logits) {
    auto allowed = [&](int64_t t) { return t != bos_ && t != pad_; };
    if (r.temperature == 0) {
      int64_t best = -1;
      for (int64_t t = 0; t < vocab_size_; ++t) {
        if (allowed(t) && (best < 0 || logits[t] > logits[best])) best = t;
      }
      return best;
    }
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < vocab_size_; ++t) {
      if (allowed(t)) top = std::max(top, logits[t]);
    }
    probabilities_.assign(static_cast<size_t>(vocab_size_), 0.0);
    order_.clear();
    double sum = 0;
    for (int64_t t = 0; t < vocab_size_; ++t) {
      if (!allowed(t)) continue;
      const double p = std::exp((static_cast<double>(logits[t]) - top) / r.temperature);
      probabilities_[static_cast<size_t>(t)] = p;
      sum += p;
      if (p > 0) order_.push_back(static_cast<int>(t));
    }
    // Most likely first (ties: the lower token), then the nucleus.
    std::sort(order_.begin(), order_.end(), [&](int a, int b) {
      const double pa = probabilities_[static_cast<size_t>(a)];
      const double pb = probabilities_[static_cast<size_t>(b)];
      return pa != pb ? pa > pb : a < b;
    });
    size_t keep = order_.size();
    double kept = sum;
    if (r.top_p < 1) {
      double cumulative = 0;
      for (size_t i = 0; i < order_.size(); ++i) {
        cumulative += probabilities_[static_cast<size_t>(order_[i])];
        if (cumulative >= r.top_p * sum) {
          keep = i + 1;
          kept = cumulative;
          break;
        }
      }
    }
    const double u = static_cast<double>(r.rng() >> 11) * 0x1.0p-53 * kept;
    double cumulative = 0;
    for (size_t i = 0; i < keep; ++i) {
      cumulative += probabilities_[static_cast<size_t>(order_[i])];
      if (u < cumulative) return order_[i];
    }
    return order_[keep - 1];
  }

  // Takes `token`, the newest of the sequence in `slot`: emits its text, ends the sequence
  // when it should. Returns whether it ended (the slot is then free).
  bool Advance(int slot, int64_t token) {
    Running& r = slots_[static_cast<size_t>(slot)];
    Sequence* sequence = r.sequence;
    ++r.generated;
    r.last_token = token;
    if (token == eos_ && !r.ignore_eos) {
      std::string text = std::move(r.held);
      r.utf8.Flush(&text);
      Release(slot);
      sequence->Emit(text, 1);
      sequence->Finish(FinishReason::kStop);
      return true;
    }
    if (token < 256) r.utf8.Push(static_cast<uint8_t>(token), &r.held);
    std::string emit;
    if (!r.stop.empty()) {
      size_t match = std::string::npos;
      for (const std::string& s : r.stop) match = std::min(match, r.held.find(s));
      if (match != std::string::npos) {
        emit = r.held.substr(0, match);
        Release(slot);
        sequence->Emit(emit, 1);
        sequence->Finish(FinishReason::kStop);
        return true;
      }
      // Hold back the longest end of the text that begins a stop string.
      size_t hold = 0;
      for (const std::string& s : r.stop) {
        for (size_t n = std::min(s.size() - 1, r.held.size()); n > hold; --n) {
          if (r.held.compare(r.held.size() - n, n, s, 0, n) == 0) {
            hold = n;
            break;
          }
        }
      }
      emit = r.held.substr(0, r.held.size() - hold);
      r.held.erase(0, r.held.size() - hold);
    } else {
      emit = std::move(r.held);
      r.held.clear();
    }
    const bool length =
        r.generated >= r.max_tokens || r.prompt_tokens + r.generated >= settings_.max_model_len;
    if (!length) {
      sequence->Emit(emit, 1);
      return false;
    }
    std::string rest = std::move(r.held);
    r.utf8.Flush(&rest);
    Release(slot);
    sequence->Emit(emit, 1);
    if (!rest.empty()) sequence->Emit(rest, 0);
    sequence->Finish(FinishReason::kLength);
    return true;
  }

  int threads_ = 1;
  Settings settings_;
  torch::jit::Module module_;
  std::unique_ptr<torch::jit::Method> prefill_;
  std::unique_ptr<torch::jit::Method> decode_;
  int64_t vocab_size_ = 0;
  int64_t bos_ = 0;
  int64_t eos_ = 0;
  int64_t pad_ = 0;
  int64_t max_positions_ = 0;
  uint64_t admitted_ = 0;  // sequences admitted so far (default seeds)

  std::vector<Running> slots_;    // max_num_seqs
  std::vector<int> free_slots_;   // a stack
  std::vector<int> running_;      // slots in use, in admission order
  std::vector<int> free_blocks_;  // a stack of KV block ids

  // Reused from step to step.
  at::Tensor tokens_;     // [max_num_seqs]
  at::Tensor positions_;  // [max_num_seqs]
  at::Tensor rows_;       // [max_num_seqs * max_model_len]: the first N are decode's rows
  at::Tensor seq_;        // [max_num_seqs * max_model_len]: the sequence of each of those
  std::vector<double> probabilities_;
  std::vector<int> order_;
  std::vector<int> step_slots_;
  std::vector<int64_t> step_tokens_;
};

}  // namespace

std::unique_ptr<Handler> MakeLlmHandler() { return std::make_unique<LlmHandler>(); }

}  // namespace tserve::backend
