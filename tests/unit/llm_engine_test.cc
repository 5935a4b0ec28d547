// The llm handler (backend/llm_engine.h) on the real demo model: scripts/demo_llm.py,
// scripted at build time into TSERVE_TEST_LLM (tests/CMakeLists.txt). A fake Sequence
// records what the engine calls; every Emit is checked to be valid UTF-8 and to come before
// the end.

#include "backend/llm_engine.h"

#include <gtest/gtest.h>
#include <torch/script.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/torchscript_handlers.h"

namespace tserve::backend {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kModel = TSERVE_TEST_LLM;
constexpr int kBos = 256;
constexpr int kEos = 257;
constexpr int kPad = 258;

bool ValidUtf8(std::string_view s) {
  std::string out;
  Utf8Decoder decoder;
  for (char c : s) decoder.Push(static_cast<uint8_t>(c), &out);
  decoder.Flush(&out);
  return out == s;
}

class FakeSequence : public Sequence {
 public:
  explicit FakeSequence(std::string body, std::string content_type = "application/json")
      : body_(std::move(body)), content_type_(std::move(content_type)) {}
  static std::unique_ptr<FakeSequence> Json(const json& j) {
    return std::make_unique<FakeSequence>(j.dump());
  }

  std::string_view request_id() const override { return "r"; }
  std::string_view content_type() const override { return content_type_; }
  std::string_view body() const override { return body_; }
  bool cancelled() const override { return cancelled_; }
  void SetPromptTokens(int tokens) override {
    EXPECT_EQ(prompt_tokens, -1) << "SetPromptTokens twice";
    EXPECT_TRUE(emits.empty()) << "SetPromptTokens after an Emit";
    prompt_tokens = tokens;
  }
  void Emit(std::string_view text, int tokens) override {
    EXPECT_FALSE(ended()) << "Emit after the end";
    EXPECT_TRUE(ValidUtf8(text)) << "invalid UTF-8 emitted";
    EXPECT_GE(tokens, 0);
    emits.emplace_back(std::string(text), tokens);
  }
  void Finish(FinishReason reason) override {
    EXPECT_FALSE(ended()) << "ended twice";
    finish = reason;
  }
  void Fail(int status, std::string_view message) override {
    EXPECT_FALSE(ended()) << "ended twice";
    fail = std::make_pair(status, std::string(message));
  }

  bool ended() const { return finish.has_value() || fail.has_value(); }
  std::string text() const {
    std::string t;
    for (const auto& e : emits) t += e.first;
    return t;
  }
  int tokens() const {
    int n = 0;
    for (const auto& e : emits) n += e.second;
    return n;
  }

  bool cancelled_ = false;
  int prompt_tokens = -1;
  std::vector<std::pair<std::string, int>> emits;
  std::optional<FinishReason> finish;
  std::optional<std::pair<int, std::string>> fail;

 private:
  std::string body_;
  std::string content_type_;
};

// A model folder holding model-config.yaml with `llm_section` (YAML lines under llm:).
class ModelDir {
 public:
  explicit ModelDir(const std::string& llm_section) {
    char pattern[] = "/tmp/llm_engine_test.XXXXXX";
    path_ = mkdtemp(pattern);
    std::ofstream(path_ + "/model-config.yaml")
        << "minWorkers: 1\nbatchSize: 1\n"
        << (llm_section.empty() ? "" : "llm:\n") << llm_section;
  }
  ~ModelDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct Engine {
  std::unique_ptr<Handler> handler;
  GenerativeHandler* gen = nullptr;
};

Engine MakeEngine(const std::string& llm_section =
                      "  max_num_seqs: 16\n  max_model_len: 256\n  block_size: 16\n"
                      "  max_tokens: 64\n") {
  ModelDir dir(llm_section);
  ModelContext context;
  context.model_name = "llm";
  context.model_dir = dir.path();
  context.serialized_file = kModel;
  Engine e;
  e.handler = MakeLlmHandler();
  e.handler->Initialize(context);
  e.gen = dynamic_cast<GenerativeHandler*>(e.handler.get());
  EXPECT_NE(e.gen, nullptr);
  return e;
}

void RunToEnd(GenerativeHandler* gen, const std::vector<FakeSequence*>& sequences) {
  for (int i = 0; i < 10000; ++i) {
    bool all = true;
    for (const FakeSequence* s : sequences) all = all && s->ended();
    if (all) return;
    gen->Step();
  }
  FAIL() << "the sequences did not end";
}

// Runs one request alone on a fresh engine.
std::unique_ptr<FakeSequence> Alone(const json& request) {
  Engine e = MakeEngine();
  auto s = FakeSequence::Json(request);
  e.gen->Admit(s.get());
  RunToEnd(e.gen, {s.get()});
  return s;
}

// The tokens `s` took to emit its first `bytes` bytes of text.
int TokensUntil(const FakeSequence& s, size_t bytes) {
  size_t text = 0;
  int tokens = 0;
  for (const auto& [t, n] : s.emits) {
    if (text >= bytes) break;
    text += t.size();
    tokens += n;
  }
  return tokens;
}

json Greedy(const std::string& prompt, int max_tokens) {
  return {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true}};
}

// ---- Utf8Decoder ------------------------------------------------------------------------

std::string Decode(std::string_view bytes, std::vector<std::string>* steps = nullptr) {
  Utf8Decoder d;
  std::string out;
  for (char c : bytes) {
    std::string piece;
    d.Push(static_cast<uint8_t>(c), &piece);
    if (steps) steps->push_back(piece);
    out += piece;
  }
  d.Flush(&out);
  return out;
}

TEST(Utf8DecoderTest, HoldsAnIncompleteCharacterUntilItsLastByte) {
  std::vector<std::string> steps;
  EXPECT_EQ(Decode("a\xF0\x9F\x98\x80z", &steps), "a\xF0\x9F\x98\x80z");
  EXPECT_EQ(steps, (std::vector<std::string>{"a", "", "", "", "\xF0\x9F\x98\x80", "z"}));
  steps.clear();
  EXPECT_EQ(Decode("\xC3\xA9", &steps), "\xC3\xA9");
  EXPECT_EQ(steps, (std::vector<std::string>{"", "\xC3\xA9"}));
}

TEST(Utf8DecoderTest, ReplacesInvalidBytesAsPython) {
  const std::string r = "\xEF\xBF\xBD";
  // Python: bytes.decode("utf-8", errors="replace")
  EXPECT_EQ(Decode("\xE2\x82"
                   "a"),
            r + "a");
  EXPECT_EQ(Decode("\xED\xA0\x80"), r + r + r);  // a surrogate
  EXPECT_EQ(Decode("\xC0\xAF"), r + r);          // overlong
  EXPECT_EQ(Decode("\xF0\x9F\x98"), r);          // cut at the end
  EXPECT_EQ(Decode("\xFF"
                   "a\x80"),
            r + "a" + r);
  EXPECT_EQ(Decode("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(Decode("\xE0\xA0\x80"), "\xE0\xA0\x80");
}

// ---- loading and settings ---------------------------------------------------------------

TEST(LlmEngineTest, TheModuleMakesIt) {
  std::unique_ptr<Handler> h = MakeTorchHandler("llm");
  ASSERT_NE(h, nullptr);
  EXPECT_NE(dynamic_cast<GenerativeHandler*>(h.get()), nullptr);
}

TEST(LlmEngineTest, IsNotABatchHandler) {
  Engine e = MakeEngine();
  Batch batch;
  EXPECT_THROW(e.handler->Preprocess(batch), std::logic_error);
  EXPECT_THROW(e.handler->Inference(batch), std::logic_error);
  EXPECT_THROW(e.handler->Postprocess(batch), std::logic_error);
}

TEST(LlmEngineTest, DefaultsWithoutASection) {
  Engine e = MakeEngine("");
  EXPECT_EQ(e.gen->FreeSlots(), 16);
  EXPECT_EQ(e.gen->Stats().kv_blocks_total, 256);
}

std::string InitializeError(const std::string& section, std::string serialized = kModel) {
  ModelDir dir(section);
  ModelContext context;
  context.model_name = "llm";
  context.model_dir = dir.path();
  context.serialized_file = std::move(serialized);
  try {
    MakeLlmHandler()->Initialize(context);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(LlmEngineTest, RefusesBadSettingsNamingTheKey) {
  EXPECT_EQ(InitializeError("  block_size: 7\n"),
            "llm: model-config.yaml: llm.block_size must divide max_model_len (256; it is 7)");
  EXPECT_EQ(InitializeError("  max_num_seqs: 0\n"),
            "llm: model-config.yaml: llm.max_num_seqs must be a positive integer");
  EXPECT_EQ(InitializeError("  max_num_seqs: many\n"),
            "llm: model-config.yaml: llm.max_num_seqs must be a positive integer");
  EXPECT_EQ(InitializeError("  max_model_len: 4096\n"),
            "llm: model-config.yaml: llm.max_model_len must be from 2 to the model's "
            "max_positions, 1024 (it is 4096)");
  EXPECT_EQ(InitializeError("  max_tokens: 256\n"),
            "llm: model-config.yaml: llm.max_tokens must be less than max_model_len (256; it "
            "is 256)");
  EXPECT_EQ(InitializeError("  kv_cache_blocks: 8\n"),
            "llm: model-config.yaml: llm.kv_cache_blocks must be from 16 (one sequence of "
            "max_model_len) to 256 (max_num_seqs of them) (it is 8)");
  EXPECT_NE(InitializeError("  max_seqs: 4\n").find("llm.max_seqs is not a setting"),
            std::string::npos);
  EXPECT_NE(InitializeError("", "").find("has no serialized file"), std::string::npos);
  EXPECT_NE(InitializeError("", "/nonexistent.pt").find("cannot load TorchScript model"),
            std::string::npos);
}

// ---- generation -------------------------------------------------------------------------

TEST(LlmEngineTest, GreedyIsDeterministic) {
  auto a = Alone(Greedy("Hello", 40));
  auto b = Alone(Greedy("Hello", 40));
  EXPECT_EQ(a->text(), b->text());
  EXPECT_EQ(a->tokens(), 40);
  EXPECT_GE(a->text().size(), 30u);  // printable ASCII, one byte a token (EOS: no text)
  for (char c : a->text()) EXPECT_TRUE(c == '\n' || (c >= 32 && c < 127)) << int(c);
  EXPECT_EQ(a->prompt_tokens, 6);  // BOS + 5 bytes
}

// The engine's greedy tokens are the argmax of the model's own forward over the whole
// sequence (no cache): the paged KV cache holds what it should, also in blocks handed out
// after other sequences'.
TEST(LlmEngineTest, GreedyMatchesTheModelWithoutCache) {
  Engine e = MakeEngine();
  auto first = FakeSequence::Json(Greedy("warm the cache up", 30));
  auto s = FakeSequence::Json(Greedy("The KV cache", 50));
  e.gen->Admit(first.get());
  e.gen->Step();
  e.gen->Admit(s.get());
  RunToEnd(e.gen, {first.get(), s.get()});
  torch::jit::Module m = torch::jit::load(kModel);
  std::vector<int64_t> tokens{kBos};
  for (char c : std::string("The KV cache")) tokens.push_back(static_cast<unsigned char>(c));
  const size_t prompt = tokens.size();
  // Greedy text is printable ASCII, one byte a token; an EOS token (ignored) has no text.
  for (const auto& [text, n] : s->emits) {
    ASSERT_EQ(n, 1);
    ASSERT_LE(text.size(), 1u);
    tokens.push_back(text.empty() ? kEos : static_cast<unsigned char>(text[0]));
  }
  c10::InferenceMode guard;
  at::Tensor logits = m.forward({torch::tensor(tokens)}).toTensor();
  logits.index_fill_(1, torch::tensor({int64_t{kBos}, int64_t{kPad}}),
                     -std::numeric_limits<float>::infinity());
  at::Tensor argmax = logits.argmax(1);
  for (size_t p = prompt; p < tokens.size(); ++p) {
    EXPECT_EQ(argmax[static_cast<int64_t>(p - 1)].item<int64_t>(), tokens[p]) << "position " << p;
  }
}

// The key property of continuous batching: a sequence's tokens do not depend on what else
// runs, nor on when it joined.
TEST(LlmEngineTest, BatchedDecodeEqualsOneAtATime) {
  std::vector<json> requests;
  for (int i = 0; i < 12; ++i) {
    requests.push_back(
        Greedy("prompt number " + std::to_string(i) + std::string(i * 7, 'x'), 10 + 9 * i));
  }
  std::vector<std::string> alone;
  for (const json& r : requests) alone.push_back(Alone(r)->text());

  Engine e = MakeEngine();
  std::vector<std::unique_ptr<FakeSequence>> seqs;
  std::vector<FakeSequence*> all;
  for (size_t i = 0; i < requests.size(); ++i) {
    seqs.push_back(FakeSequence::Json(requests[i]));
    all.push_back(seqs.back().get());
    ASSERT_EQ(e.gen->Admit(all.back()), AdmitResult::kAdmitted);
    for (size_t k = 0; k < i % 4; ++k) e.gen->Step();  // staggered admissions
  }
  RunToEnd(e.gen, all);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(all[i]->text(), alone[i]) << "request " << i;
    EXPECT_EQ(all[i]->finish, FinishReason::kLength);
  }
  EXPECT_EQ(e.gen->Stats().running, 0);
  EXPECT_EQ(e.gen->Stats().kv_blocks_used, 0);
  EXPECT_EQ(e.gen->FreeSlots(), 16);
}

TEST(LlmEngineTest, SeededSamplingIsReproducibleWhateverRunsBesideIt) {
  const json request = {{"prompt", "Once upon a time"},
                        {"max_tokens", 60},
                        {"temperature", 0.9},
                        {"top_p", 0.95},
                        {"seed", 1234},
                        {"ignore_eos", true}};
  const std::string alone = Alone(request)->text();
  EXPECT_EQ(Alone(request)->text(), alone);
  json other = request;
  other["seed"] = 99;
  EXPECT_NE(Alone(other)->text(), alone);

  Engine e = MakeEngine();
  auto c1 = FakeSequence::Json({{"prompt", "companion"}, {"max_tokens", 80}, {"temperature", 1.2}});
  auto c2 = FakeSequence::Json(Greedy("another", 20));
  auto s = FakeSequence::Json(request);
  e.gen->Admit(c1.get());
  e.gen->Step();
  e.gen->Step();
  e.gen->Admit(s.get());
  e.gen->Step();
  e.gen->Admit(c2.get());
  RunToEnd(e.gen, {c1.get(), c2.get(), s.get()});
  EXPECT_EQ(s->text(), alone);
}

TEST(LlmEngineTest, MaxTokensGivesExactlyThatManyTokens) {
  for (int n : {1, 2, 17}) {
    auto s = Alone(Greedy("count", n));
    EXPECT_EQ(s->tokens(), n);
    EXPECT_EQ(s->emits.size(), static_cast<size_t>(n));
    EXPECT_EQ(s->finish, FinishReason::kLength);
  }
  Engine e = MakeEngine();
  auto one = FakeSequence::Json(Greedy("one", 1));
  EXPECT_EQ(e.gen->Admit(one.get()), AdmitResult::kEnded);  // done in the prefill
  EXPECT_EQ(one->finish, FinishReason::kLength);
  EXPECT_EQ(e.gen->Stats().kv_blocks_used, 0);
}

TEST(LlmEngineTest, DefaultMaxTokensAndATextBody) {
  Engine e = MakeEngine();
  FakeSequence s("Hello", "text/plain");
  e.gen->Admit(&s);
  RunToEnd(e.gen, {&s});
  EXPECT_EQ(s.prompt_tokens, 6);
  EXPECT_LE(s.tokens(), 64);  // the section's max_tokens (or an earlier EOS)
  ASSERT_TRUE(s.finish.has_value());
  // Without max_tokens the default is clamped to what the prompt leaves (as vLLM).
  auto clamp = FakeSequence::Json({{"prompt", std::string(250, 'a')}, {"ignore_eos", true}});
  e.gen->Admit(clamp.get());
  RunToEnd(e.gen, {clamp.get()});
  EXPECT_EQ(clamp->tokens(), 256 - 251);
  EXPECT_EQ(clamp->finish, FinishReason::kLength);
}

TEST(LlmEngineTest, EosEndsWithStopUnlessIgnored) {
  // Greedy decoding of the demo model ends on EOS after some 20-80 tokens.
  for (int i = 0; i < 10; ++i) {
    const std::string prompt = "prompt " + std::to_string(i);
    auto s = Alone({{"prompt", prompt}, {"max_tokens", 200}, {"temperature", 0}});
    if (s->finish != FinishReason::kStop) continue;
    ASSERT_LT(s->tokens(), 200);
    EXPECT_EQ(s->emits.back(), (std::pair<std::string, int>{"", 1}));  // EOS: counted, no text
    auto ignoring = Alone(Greedy(prompt, 200));
    EXPECT_EQ(ignoring->finish, FinishReason::kLength);
    EXPECT_EQ(ignoring->tokens(), 200);
    EXPECT_EQ(ignoring->text().substr(0, s->text().size()), s->text());
    return;
  }
  FAIL() << "no prompt ended on EOS";
}

TEST(LlmEngineTest, StopStringEndsBeforeIt) {
  auto reference = Alone(Greedy("stop here", 60));
  const std::string full = reference->text();
  ASSERT_GE(full.size(), 40u);
  const std::string stop = full.substr(20, 3);
  const size_t at = full.find(stop);
  json request = Greedy("stop here", 60);
  request["stop"] = {"never-in-this-text", stop};
  auto s = Alone(request);
  EXPECT_EQ(s->finish, FinishReason::kStop);
  EXPECT_EQ(s->text(), full.substr(0, at));
  // The stop string's tokens count.
  EXPECT_EQ(s->tokens(), TokensUntil(*reference, at + stop.size()));
  for (const auto& e : s->emits) EXPECT_EQ(e.first.find(stop), std::string::npos);
}

TEST(LlmEngineTest, TextThatOnlyBeginsAStopStringIsHeldBackThenSent) {
  const std::string full = Alone(Greedy("stop here", 60))->text();
  const std::string stop = full.substr(20, 2) + "\x01\x02";  // never generated
  json request = Greedy("stop here", 60);
  request["stop"] = stop;
  auto s = Alone(request);
  EXPECT_EQ(s->finish, FinishReason::kLength);
  EXPECT_EQ(s->text(), full);
  EXPECT_EQ(s->tokens(), 60);
  // Some token's text was held back (empty Emit) and came with a later one.
  bool held = false;
  for (const auto& e : s->emits) held = held || (e.first.empty() && e.second == 1);
  EXPECT_TRUE(held);
  // Held at the very end: sent before the Finish, in an Emit of 0 tokens.
  const std::string tail_stop = full.substr(full.size() - 2) + "\x01";
  request["stop"] = tail_stop;
  auto t = Alone(request);
  EXPECT_EQ(t->text(), full);
  EXPECT_EQ(t->emits.back(), (std::pair<std::string, int>{full.substr(full.size() - 2), 0}));
}

TEST(LlmEngineTest, EveryEmitIsValidUtf8AtAHighTemperature) {
  // At temperature 50 the non-text bytes (bias -20) come out too.
  Engine e = MakeEngine();
  std::vector<std::unique_ptr<FakeSequence>> seqs;
  std::vector<FakeSequence*> all;
  for (int i = 0; i < 8; ++i) {
    seqs.push_back(FakeSequence::Json({{"prompt", "hot " + std::to_string(i)},
                                       {"max_tokens", 100},
                                       {"temperature", 50},
                                       {"seed", i},
                                       {"stop", "\xC3\xA9"}}));
    all.push_back(seqs.back().get());
    e.gen->Admit(all.back());
  }
  RunToEnd(e.gen, all);
  bool non_ascii = false;
  for (const FakeSequence* s : all) {
    EXPECT_TRUE(ValidUtf8(s->text()));
    for (char c : s->text()) non_ascii = non_ascii || static_cast<unsigned char>(c) >= 0x80;
  }
  EXPECT_TRUE(non_ascii);
}

TEST(LlmEngineTest, CancelledAbortsAtTheNextStepAndFreesItsSlot) {
  Engine e = MakeEngine();
  auto a = FakeSequence::Json(Greedy("a", 100));
  auto b = FakeSequence::Json(Greedy("b", 100));
  e.gen->Admit(a.get());
  e.gen->Admit(b.get());
  e.gen->Step();
  EXPECT_EQ(e.gen->FreeSlots(), 14);
  EXPECT_EQ(e.gen->Stats().kv_blocks_used, 2 * 7);  // ceil((2 + 100) / 16)
  const size_t emitted = b->emits.size();
  b->cancelled_ = true;
  e.gen->Step();
  EXPECT_EQ(b->finish, FinishReason::kAbort);
  EXPECT_EQ(b->emits.size(), emitted);  // nothing more after the cancel
  EXPECT_FALSE(a->ended());
  EXPECT_EQ(e.gen->FreeSlots(), 15);
  EXPECT_EQ(e.gen->Stats().running, 1);
  EXPECT_EQ(e.gen->Stats().kv_blocks_used, 7);
  a->cancelled_ = true;
  e.gen->Step();
  EXPECT_EQ(a->finish, FinishReason::kAbort);
  EXPECT_EQ(e.gen->FreeSlots(), 16);
  EXPECT_EQ(e.gen->Stats().kv_blocks_used, 0);
  // Cancelled before admission: ended, nothing reserved.
  auto c = FakeSequence::Json(Greedy("c", 10));
  c->cancelled_ = true;
  EXPECT_EQ(e.gen->Admit(c.get()), AdmitResult::kEnded);
  EXPECT_EQ(c->finish, FinishReason::kAbort);
  EXPECT_EQ(e.gen->FreeSlots(), 16);
}

TEST(LlmEngineTest, KvBlocksAreCountedPerSequence) {
  Engine e = MakeEngine();
  std::vector<std::unique_ptr<FakeSequence>> seqs;
  int expected = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string prompt(static_cast<size_t>(i * 5), 'p');
    const int max_tokens = 3 + i * 4;
    seqs.push_back(FakeSequence::Json(Greedy(prompt, max_tokens)));
    ASSERT_EQ(e.gen->Admit(seqs.back().get()), AdmitResult::kAdmitted);
    expected += (i * 5 + 1 + max_tokens + 15) / 16;
    EXPECT_EQ(e.gen->Stats().kv_blocks_used, expected);
  }
  EXPECT_EQ(e.gen->FreeSlots(), 0);
  EXPECT_EQ(e.gen->Stats().running, 16);
  EXPECT_EQ(e.gen->Stats().kv_blocks_total, 256);
  // The first ends after 3 tokens: its 1 block is free at once.
  e.gen->Step();
  e.gen->Step();
  EXPECT_EQ(seqs[0]->finish, FinishReason::kLength);
  EXPECT_EQ(e.gen->Stats().kv_blocks_used, expected - 1);
  EXPECT_EQ(e.gen->FreeSlots(), 1);
}

TEST(LlmEngineTest, NoRoomWhenBlocksAreShort) {
  Engine e = MakeEngine("  max_model_len: 256\n  block_size: 16\n  kv_cache_blocks: 16\n");
  EXPECT_EQ(e.gen->Stats().kv_blocks_total, 16);
  auto big = FakeSequence::Json(Greedy(std::string(99, 'b'), 100));  // 200 tokens: 13 blocks
  ASSERT_EQ(e.gen->Admit(big.get()), AdmitResult::kAdmitted);
  auto small = FakeSequence::Json(Greedy("s", 60));  // 62 tokens: 4 blocks
  EXPECT_EQ(e.gen->Admit(small.get()), AdmitResult::kNoRoom);
  EXPECT_EQ(small->prompt_tokens, -1);  // untouched: it waits
  EXPECT_TRUE(small->emits.empty());
  EXPECT_FALSE(small->ended());
  EXPECT_GT(e.gen->FreeSlots(), 0);
  auto fits = FakeSequence::Json(Greedy("f", 40));  // 42 tokens: 3 blocks
  EXPECT_EQ(e.gen->Admit(fits.get()), AdmitResult::kAdmitted);
  RunToEnd(e.gen, {big.get(), fits.get()});
  EXPECT_EQ(e.gen->Admit(small.get()), AdmitResult::kAdmitted);
}

TEST(LlmEngineTest, BadRequestsFailWith400) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{not json", "the body is not valid JSON: malformed JSON"},
      {"[1, 2]", "the body must be a JSON object"},
      {R"({"max_tokens": 3})", "the request has no \"prompt\""},
      {R"({"prompt": 3})", "\"prompt\" must be a string"},
      {R"({"prompt": "a", "max_tokens": 0})", "\"max_tokens\" must be an integer >= 1"},
      {R"({"prompt": "a", "max_tokens": 2.5})", "\"max_tokens\" must be an integer >= 1"},
      {R"({"prompt": "a", "temperature": -1})", "\"temperature\" must be a number >= 0"},
      {R"({"prompt": "a", "temperature": "hot"})", "\"temperature\" must be a number >= 0"},
      {R"({"prompt": "a", "top_p": 0})", "\"top_p\" must be a number in (0, 1]"},
      {R"({"prompt": "a", "top_p": 1.5})", "\"top_p\" must be a number in (0, 1]"},
      {R"({"prompt": "a", "seed": "x"})", "\"seed\" must be an integer"},
      {R"({"prompt": "a", "stop": 5})", "\"stop\" must be a string or an array of at most 4"},
      {R"({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]})",
       "\"stop\" must be a string or an array of at most 4"},
      {R"({"prompt": "a", "stop": [""]})", "each stop string must be 1 to 256 bytes"},
      {R"({"prompt": "a", "stop": ")" + std::string(257, 's') + "\"}",
       "each stop string must be 1 to 256 bytes"},
      {R"({"prompt": "a", "ignore_eos": 1})", "\"ignore_eos\" must be a boolean"},
      {R"({"prompt": "a", "max_tokens": 255})",
       "This model's maximum context length is 256 tokens. However, you requested 257 tokens "
       "(2 in the prompt, 255 for the completion). Please reduce the length of the prompt or "
       "max_tokens."},
      {json({{"prompt", std::string(300, 'x')}}).dump(),
       "This model's maximum context length is 256 tokens. However, your prompt is 301 tokens"},
  };
  Engine e = MakeEngine();
  for (const auto& [body, message] : cases) {
    FakeSequence s(body);
    EXPECT_EQ(e.gen->Admit(&s), AdmitResult::kEnded) << body;
    ASSERT_TRUE(s.fail.has_value()) << body;
    EXPECT_EQ(s.fail->first, 400) << body;
    EXPECT_EQ(s.fail->second.substr(0, message.size()), message) << body;
    EXPECT_TRUE(s.emits.empty());
  }
  EXPECT_EQ(e.gen->FreeSlots(), 16);
  EXPECT_EQ(e.gen->Stats().kv_blocks_used, 0);
  // Nulls count as absent (OpenAI clients send them).
  FakeSequence ok(R"({"prompt": "a", "max_tokens": 2, "temperature": null, "stop": null})");
  e.gen->Admit(&ok);
  RunToEnd(e.gen, {&ok});
  EXPECT_FALSE(ok.fail.has_value());
}

// Not a test: tokens/s of Step at batch 1 and 16 (--gtest_also_run_disabled_tests).
TEST(LlmEngineTest, DISABLED_DecodeThroughput) {
  for (int batch : {1, 16}) {
    Engine e = MakeEngine();
    std::vector<std::unique_ptr<FakeSequence>> seqs;
    std::vector<FakeSequence*> all;
    for (int i = 0; i < batch; ++i) {
      seqs.push_back(FakeSequence::Json(Greedy("throughput " + std::to_string(i), 200)));
      all.push_back(seqs.back().get());
      e.gen->Admit(all.back());
    }
    const auto start = std::chrono::steady_clock::now();
    int steps = 0;
    while (e.gen->Stats().running > 0) {
      e.gen->Step();
      ++steps;
    }
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("batch %2d: %d steps, %.0f tokens/s, %.3f ms/step\n", batch, steps,
                batch * steps / s, 1e3 * s / steps);
  }
}

}  // namespace
}  // namespace tserve::backend
