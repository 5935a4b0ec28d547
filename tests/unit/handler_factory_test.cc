#include "backend/handler_factory.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <link.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/torch_extensions.h"

namespace tserve::backend {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with its contents at scope exit.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("tserve_handler_factory_" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

void WriteFile(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

// Records every call, as the server's HandlerMetrics would receive them.
class FakeMetrics final : public Metrics {
 public:
  struct Call {
    std::string api;
    std::string name;
    double value;
    std::string unit;
    Dimensions dimensions;
  };

  void AddCounter(std::string_view name, double value, const Dimensions& d) override {
    Add("counter", name, value, "", d);
  }
  void AddTime(std::string_view name, double value, const Dimensions& d,
               std::string_view unit) override {
    Add("time", name, value, unit, d);
  }
  void AddSize(std::string_view name, double value, const Dimensions& d,
               std::string_view unit) override {
    Add("size", name, value, unit, d);
  }
  void AddPercent(std::string_view name, double value, const Dimensions& d) override {
    Add("percent", name, value, "", d);
  }
  void AddMetric(std::string_view name, double value, std::string_view unit,
                 const Dimensions& d) override {
    Add("metric", name, value, unit, d);
  }

  std::vector<Call> calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  void Add(std::string api, std::string_view name, double value, std::string_view unit,
           const Dimensions& d) {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back({std::move(api), std::string(name), value, std::string(unit), d});
  }
  mutable std::mutex mu_;
  std::vector<Call> calls_;
};

// Runs the four phases as a worker does.
void RunBatch(Handler& h, Batch& batch) {
  h.Preprocess(batch);
  h.Inference(batch);
  h.Postprocess(batch);
}

Batch MakeBatch(const std::vector<std::pair<std::string_view, std::string_view>>& requests) {
  Batch b;
  for (const auto& [content_type, body] : requests)
    b.requests.push_back({"req", content_type, body});
  return b;
}

// Copies the example plugin into `dir` under `name`.
void InstallExamplePlugin(const fs::path& dir, const std::string& name) {
  fs::create_directories((dir / name).parent_path());
  fs::copy_file(TSERVE_EXAMPLE_PLUGIN, dir / name, fs::copy_options::overwrite_existing);
}

class DummyHandler final : public Handler {
 public:
  void Initialize(const ModelContext&) override {}
  void Preprocess(Batch&) override {}
  void Inference(Batch&) override {}
  void Postprocess(Batch&) override {}
};

TEST(HandlerFactoryTest, BuiltinIsRegisteredAndCreated) {
  HandlerFactory f;
  RegisterNoopHandler(&f);
  f.RegisterBuiltin("tensor", [] { return std::make_unique<DummyHandler>(); });
  EXPECT_TRUE(f.IsBuiltin("noop"));
  EXPECT_TRUE(f.IsBuiltin("tensor"));
  EXPECT_FALSE(f.IsBuiltin("image_classifier"));
  EXPECT_EQ(f.BuiltinNames(), (std::vector<std::string>{"noop", "tensor"}));
  auto h = f.Create("noop", "/nonexistent");
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_NE(h->get(), nullptr);
  // Each Create makes a new instance (one per worker).
  auto h2 = f.Create("noop", "/nonexistent");
  ASSERT_TRUE(h2.ok());
  EXPECT_NE(h->get(), h2->get());
}

TEST(HandlerFactoryTest, UnknownNameListsBuiltins) {
  HandlerFactory f;
  RegisterNoopHandler(&f);
  f.RegisterBuiltin("tensor", [] { return std::make_unique<DummyHandler>(); });
  f.RegisterBuiltin("image_classifier", [] { return std::make_unique<DummyHandler>(); });
  TempDir dir;
  auto h = f.Create("foo", dir.str());
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(h.status().message(),
            "unknown handler \"foo\" (built-in handlers: image_classifier, noop, tensor; or a "
            ".so plugin inside the model folder)");
}

TEST(HandlerFactoryTest, PythonHandlerGetsAHint) {
  HandlerFactory f;
  RegisterNoopHandler(&f);
  TempDir dir;
  WriteFile(dir.path() / "my_handler.py", "class MyHandler: pass\n");
  for (const std::string name : {"image_classifier.py", "my_handler.py", "my_handler.py:handle"}) {
    auto h = f.Create(name, dir.str());
    ASSERT_FALSE(h.ok());
    EXPECT_EQ(h.status().message(),
              "unknown handler \"" + name +
                  "\" (built-in handlers: noop; or a .so plugin inside the model folder); Python "
                  "handlers are not supported: use a built-in or a C++ plugin");
  }
}

TEST(HandlerFactoryTest, BuiltinMakerFailuresAreErrors) {
  HandlerFactory f;
  f.RegisterBuiltin("null", [] { return std::unique_ptr<Handler>(); });
  f.RegisterBuiltin(
      "throws", []() -> std::unique_ptr<Handler> { throw std::runtime_error("no model file"); });
  auto a = f.Create("null", "/");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), "handler \"null\": built-in maker returned null");
  auto b = f.Create("throws", "/");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(), "handler \"throws\": no model file");
}

// Issue 7: a maker (or plugin) may throw anything; the factory's border turns it into an
// error instead of letting it reach std::terminate.
TEST(HandlerFactoryTest, BuiltinMakerThrowingANonStandardExceptionIsAnError) {
  HandlerFactory f;
  f.RegisterBuiltin("throws_int", []() -> std::unique_ptr<Handler> { throw 42; });
  auto h = f.Create("throws_int", "/");
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kInternal);
  EXPECT_EQ(h.status().message(),
            "handler \"throws_int\": built-in maker threw a non-standard exception");
}

TEST(HandlerFactoryTest, NoopDelayMsIsValidated) {
  HandlerFactory f;
  RegisterNoopHandler(&f);
  for (const char* bad : {"-1", "x", "60001", "5ms", ""}) {
    auto h = f.Create("noop", "");
    ASSERT_TRUE(h.ok());
    ModelContext ctx;
    ctx.config["delay_ms"] = bad;
    EXPECT_THROW((*h)->Initialize(ctx), std::invalid_argument) << bad;
  }
  auto h = f.Create("noop", "");
  ASSERT_TRUE(h.ok());
  ModelContext ctx;
  ctx.config["delay_ms"] = "1";
  (*h)->Initialize(ctx);
  Batch b = MakeBatch({{"text/plain", "slow"}});
  RunBatch(**h, b);
  ASSERT_EQ(b.responses.size(), 1u);
  EXPECT_EQ(b.responses[0].body, "slow");
}

TEST(HandlerFactoryTest, NoopEchoesBodiesWithContentType) {
  HandlerFactory f;
  RegisterNoopHandler(&f);
  auto h = f.Create("noop", "");
  ASSERT_TRUE(h.ok());
  (*h)->Initialize(ModelContext{});
  Batch b = MakeBatch({{"text/plain", "hello"}, {"", std::string_view("\0bin", 4)}, {"x/y", ""}});
  RunBatch(**h, b);
  ASSERT_EQ(b.responses.size(), 3u);
  EXPECT_EQ(b.responses[0].status, 200);
  EXPECT_EQ(b.responses[0].content_type, "text/plain");
  EXPECT_EQ(b.responses[0].body, "hello");
  EXPECT_EQ(b.responses[1].content_type, "application/octet-stream");
  EXPECT_EQ(b.responses[1].body, std::string("\0bin", 4));
  EXPECT_EQ(b.responses[2].content_type, "x/y");
  EXPECT_EQ(b.responses[2].body, "");
  // A second batch on the same instance starts clean.
  Batch b2 = MakeBatch({{"a/b", "again"}});
  RunBatch(**h, b2);
  ASSERT_EQ(b2.responses.size(), 1u);
  EXPECT_EQ(b2.responses[0].body, "again");
}

TEST(HandlerFactoryTest, PluginRunsAllPhasesAndRecordsMetrics) {
  TempDir dir;
  InstallExamplePlugin(dir.path(), "libexample_handler.so");
  HandlerFactory f;
  RegisterNoopHandler(&f);
  auto h = f.Create("libexample_handler.so", dir.str());
  ASSERT_TRUE(h.ok()) << h.status().message();

  FakeMetrics metrics;
  ModelContext ctx;
  ctx.model_name = "example";
  ctx.model_dir = dir.str();
  ctx.handler = "libexample_handler.so";
  ctx.metrics = &metrics;
  (*h)->Initialize(ctx);

  Batch b = MakeBatch(
      {{"text/plain", "hello world"}, {"text/plain", ""}, {"text/plain", "  one\ttwo\nthree  "}});
  RunBatch(**h, b);
  ASSERT_EQ(b.responses.size(), 3u);
  EXPECT_EQ(b.responses[0].status, 200);
  EXPECT_EQ(b.responses[0].content_type, "application/json");
  EXPECT_EQ(b.responses[0].body, R"({"length": 11, "words": 2})");
  EXPECT_EQ(b.responses[1].body, R"({"length": 0, "words": 0})");
  EXPECT_EQ(b.responses[2].body, R"({"length": 17, "words": 3})");

  // The example's two error paths: "refuse" is that request's own 400, "raise" throws.
  Batch refused = MakeBatch({{"text/plain", "a b"}, {"text/plain", "refuse"}});
  RunBatch(**h, refused);
  ASSERT_EQ(refused.responses.size(), 2u);
  EXPECT_EQ(refused.responses[0].status, 200);
  EXPECT_EQ(refused.responses[1].status, 400);
  EXPECT_NE(refused.responses[1].body.find("BadRequestException"), std::string::npos);
  Batch raised = MakeBatch({{"text/plain", "raise"}});
  EXPECT_THROW(RunBatch(**h, raised), std::runtime_error);

  auto calls = metrics.calls();
  calls.resize(4);  // the batch above; the error batches' calls are not checked here
  ASSERT_EQ(calls.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(calls[i].api, "counter");
    EXPECT_EQ(calls[i].name, "ExampleRequests");
    EXPECT_EQ(calls[i].value, 1.0);
    EXPECT_TRUE(calls[i].dimensions.empty());
  }
  EXPECT_EQ(calls[3].api, "time");
  EXPECT_EQ(calls[3].name, "ExampleHandlerTime");
  EXPECT_EQ(calls[3].unit, "ms");
  EXPECT_GE(calls[3].value, 0.0);
}

TEST(HandlerFactoryTest, PluginInSubfolderAndOutlivingFactory) {
  TempDir dir;
  InstallExamplePlugin(dir.path(), "handlers/libx.so");
  std::unique_ptr<Handler> h1, h2;
  {
    HandlerFactory f;
    auto a = f.Create("handlers/libx.so", dir.str());
    ASSERT_TRUE(a.ok()) << a.status().message();
    auto b = f.Create("./handlers/../handlers/libx.so", dir.str());
    ASSERT_TRUE(b.ok()) << b.status().message();
    h1 = std::move(*a);
    h2 = std::move(*b);
  }
  // The library stays loaded while any handler lives, whatever order they go in.
  h1.reset();
  h2->Initialize(ModelContext{});
  Batch batch = MakeBatch({{"text/plain", "a b"}});
  RunBatch(*h2, batch);
  ASSERT_EQ(batch.responses.size(), 1u);
  EXPECT_EQ(batch.responses[0].body, R"({"length": 3, "words": 2})");
}

TEST(HandlerFactoryTest, AbsolutePathRejected) {
  TempDir dir;
  InstallExamplePlugin(dir.path(), "libexample_handler.so");
  HandlerFactory f;
  const std::string abs = (dir.path() / "libexample_handler.so").string();
  auto h = f.Create(abs, dir.str());
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().message(),
            "handler \"" + abs +
                "\": a plugin must be named by a path relative to the model folder, not an "
                "absolute path");
}

TEST(HandlerFactoryTest, EscapeFromModelFolderRejected) {
  TempDir outer;
  const fs::path model = outer.path() / "model";
  fs::create_directories(model);
  InstallExamplePlugin(outer.path(), "libevil.so");
  const std::string root = fs::canonical(model).string();
  HandlerFactory f;

  auto a = f.Create("../libevil.so", model.string());
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(a.status().message(),
            "handler \"../libevil.so\": plugin path resolves outside the "
            "model folder \"" +
                root + "\"");

  // A missing file reached through ".." is still "outside", not "not found".
  auto b = f.Create("../missing.so", model.string());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kPermissionDenied);

  // A symlink inside the folder that points outside it.
  fs::create_symlink(outer.path() / "libevil.so", model / "liblink.so");
  auto c = f.Create("liblink.so", model.string());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            "handler \"liblink.so\": plugin path resolves outside the "
            "model folder \"" +
                root + "\"");
}

TEST(HandlerFactoryTest, MissingPluginFile) {
  TempDir dir;
  HandlerFactory f;
  auto h = f.Create("libnothere.so", dir.str());
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(h.status().message(),
            "handler \"libnothere.so\": plugin file not found in the model folder (No such "
            "file or directory)");
}

TEST(HandlerFactoryTest, NotALibraryGivesDlerror) {
  TempDir dir;
  WriteFile(dir.path() / "libbroken.so", "this is not an ELF file, just text\n");
  HandlerFactory f;
  auto h = f.Create("libbroken.so", dir.str());
  ASSERT_FALSE(h.ok());
  const std::string& m = h.status().message();
  const std::string prefix = "handler \"libbroken.so\": cannot load plugin: ";
  EXPECT_EQ(m.substr(0, prefix.size()), prefix) << m;
  // dlerror names the file and the cause (glibc: "invalid ELF header" or "file too short").
  EXPECT_NE(m.find("libbroken.so:"), std::string::npos) << m;
  EXPECT_TRUE(m.find("invalid ELF header") != std::string::npos ||
              m.find("file too short") != std::string::npos)
      << m;
}

// Finds zlib (always installed on Debian) beside the system libraries this test loads: an
// ordinary shared library without the factory symbol, safe to load a private copy of.
std::string FindPlainLibrary() {
  std::vector<fs::path> dirs;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        if (info->dlpi_name != nullptr && info->dlpi_name[0] == '/') {
          static_cast<std::vector<fs::path>*>(data)->push_back(
              fs::path(info->dlpi_name).parent_path());
        }
        return 0;
      },
      &dirs);
  for (const fs::path& dir : dirs) {
    std::error_code ec;
    if (fs::is_regular_file(dir / "libz.so.1", ec)) return (dir / "libz.so.1").string();
  }
  return "";
}

TEST(HandlerFactoryTest, LibraryWithoutFactorySymbol) {
  const std::string lib = FindPlainLibrary();
  if (lib.empty()) GTEST_SKIP() << "no plain shared library loaded to copy";
  TempDir dir;
  fs::copy_file(lib, dir.path() / "libplain.so");
  HandlerFactory f;
  auto h = f.Create("libplain.so", dir.str());
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().message(),
            "handler \"libplain.so\": plugin does not export tserve_create_handler (declare it "
            "extern \"C\" tserve::Handler* tserve_create_handler())");
}

// ---- backend modules ----------------------------------------------------------------------

// The fake backend module (fake_backend.cc), searched in its own build directory.
BackendSpec FakeBackend() {
  BackendSpec spec;
  spec.name = "fake";
  spec.description = "fake backend";
  spec.library = fs::path(TSERVE_FAKE_BACKEND).filename().string();
  spec.handlers = {"fake_echo", "fake_null", "fake_throw"};
  spec.search_dirs = {fs::path(TSERVE_FAKE_BACKEND).parent_path().string()};
  spec.companions_key = "fake_companions";
  spec.companions_description = "fake operators";
  return spec;
}

// Counts (and keeps) the factory's log lines.
struct LogLines {
  std::mutex mu;
  std::vector<std::string> lines;
  HandlerFactory::Logger Logger() {
    return [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu);
      lines.push_back(line);
    };
  }
};

TEST(HandlerFactoryBackendTest, HandlersAreKnownBeforeTheModuleIsLoaded) {
  HandlerFactory f;
  RegisterNoopHandler(&f);
  LogLines log;
  f.SetLogger(log.Logger());
  f.RegisterBackend(FakeBackend());
  EXPECT_TRUE(f.IsBuiltin("fake_echo"));
  EXPECT_EQ(f.BuiltinNames(),
            (std::vector<std::string>{"fake_echo", "fake_null", "fake_throw", "noop"}));
  auto unknown = f.Create("foo", "");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().message(),
            "unknown handler \"foo\" (built-in handlers: fake_echo, fake_null, fake_throw, noop; "
            "or a .so plugin inside the model folder)");
  EXPECT_TRUE(log.lines.empty());  // nothing loaded by asking
}

TEST(HandlerFactoryBackendTest, FirstCreateLoadsTheModule) {
  HandlerFactory f;
  LogLines log;
  f.SetLogger(log.Logger());
  f.RegisterBackend(FakeBackend());
  auto h = f.Create("fake_echo", "");
  ASSERT_TRUE(h.ok()) << h.status().message();
  Batch batch = MakeBatch({{"text/plain", "hello"}});
  (*h)->Initialize(ModelContext{});
  RunBatch(**h, batch);
  ASSERT_EQ(batch.responses.size(), 1u);
  EXPECT_EQ(batch.responses[0].body, "hello");
  ASSERT_TRUE(f.Create("fake_echo", "").ok());
  ASSERT_EQ(log.lines.size(), 1u);  // loaded once
  EXPECT_EQ(log.lines[0].rfind(
                "loaded the fake backend from " + std::string(TSERVE_FAKE_BACKEND) + " in ", 0),
            0u)
      << log.lines[0];
}

TEST(HandlerFactoryBackendTest, ConcurrentFirstCreatesLoadItOnce) {
  HandlerFactory f;
  LogLines log;
  f.SetLogger(log.Logger());
  f.RegisterBackend(FakeBackend());
  std::atomic<int> created{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (f.Create("fake_echo", "").ok()) ++created;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(created.load(), 8);
  EXPECT_EQ(log.lines.size(), 1u);
}

TEST(HandlerFactoryBackendTest, MissingModuleIsAClearErrorAndOthersStillWork) {
  TempDir dir;
  HandlerFactory f;
  RegisterNoopHandler(&f);
  BackendSpec spec = FakeBackend();
  spec.library = "libtserve_missing.so";
  spec.search_dirs = {(dir.path() / "a").string(), (dir.path() / "b").string()};
  f.RegisterBackend(spec);
  for (int attempt = 0; attempt < 2; ++attempt) {  // not cached: the same answer again
    auto h = f.Create("fake_echo", "");
    ASSERT_FALSE(h.ok());
    EXPECT_EQ(h.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ(h.status().message(),
              "handler \"fake_echo\" needs the fake backend (libtserve_missing.so), which is "
              "not installed: looked in " +
                  dir.str() + "/a, " + dir.str() + "/b");
  }
  EXPECT_TRUE(f.Create("noop", "").ok());
}

TEST(HandlerFactoryBackendTest, PrepareLoadsTheModuleOrSaysWhyNot) {
  HandlerFactory f;
  RegisterNoopHandler(&f);
  LogLines log;
  f.SetLogger(log.Logger());
  f.RegisterBackend(FakeBackend());
  EXPECT_TRUE(f.Prepare("noop").ok());          // not a backend's: nothing to do
  EXPECT_TRUE(f.Prepare("libplugin.so").ok());  // plugins are checked by Create
  EXPECT_TRUE(log.lines.empty());
  ASSERT_TRUE(f.Prepare("fake_echo").ok());
  ASSERT_EQ(log.lines.size(), 1u);  // loaded now, once
  ASSERT_TRUE(f.Create("fake_echo", "").ok());
  EXPECT_EQ(log.lines.size(), 1u);

  TempDir dir;
  HandlerFactory missing;
  BackendSpec spec = FakeBackend();
  spec.library = "libtserve_missing.so";
  spec.search_dirs = {dir.str()};
  missing.RegisterBackend(spec);
  Status s = missing.Prepare("fake_null");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "handler \"fake_null\" needs the fake backend (libtserve_missing.so), which is not "
            "installed: looked in " +
                dir.str());
}

TEST(HandlerFactoryBackendTest, ModuleThatCannotLoadGivesDlerror) {
  TempDir dir;
  WriteFile(dir.path() / "libtserve_fake.so", "not an ELF file");
  HandlerFactory f;
  BackendSpec spec = FakeBackend();
  spec.search_dirs = {dir.str()};
  f.RegisterBackend(spec);
  auto h = f.Create("fake_echo", "");
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("handler \"fake_echo\" needs the fake backend "
                                      "(libtserve_fake.so), which cannot be loaded: " +
                                      dir.str() + "/libtserve_fake.so"),
            std::string::npos)
      << h.status().message();
}

TEST(HandlerFactoryBackendTest, ModuleWithoutTheEntryPointsIsRefused) {
  // The example plugin: a loadable library with a version but no backend entry points.
  TempDir dir;
  fs::copy_file(TSERVE_EXAMPLE_PLUGIN, dir.path() / "libtserve_fake.so");
  HandlerFactory f;
  BackendSpec spec = FakeBackend();
  spec.search_dirs = {dir.str()};
  f.RegisterBackend(spec);
  auto h = f.Create("fake_echo", "");
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().message(),
            "handler \"fake_echo\" needs the fake backend (libtserve_fake.so), but " + dir.str() +
                "/libtserve_fake.so does not export tserve_backend_handler_names and "
                "tserve_backend_create_handler");
}

TEST(HandlerFactoryBackendTest, ModuleMustProvideEveryHandlerDeclared) {
  HandlerFactory f;
  BackendSpec spec = FakeBackend();
  spec.handlers.push_back("fake_other");
  f.RegisterBackend(spec);
  auto h = f.Create("fake_echo", "");
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().message(),
            "handler \"fake_echo\" needs the fake backend (libtserve_fake.so), but " +
                std::string(TSERVE_FAKE_BACKEND) + " does not provide handler \"fake_other\"");
}

TEST(HandlerFactoryBackendTest, CreateFailuresAreErrors) {
  HandlerFactory f;
  f.RegisterBackend(FakeBackend());
  auto null = f.Create("fake_null", "");
  ASSERT_FALSE(null.ok());
  EXPECT_EQ(null.status().message(),
            "handler \"fake_null\": tserve_backend_create_handler returned null");
  auto thrown = f.Create("fake_throw", "");
  ASSERT_FALSE(thrown.ok());
  EXPECT_EQ(thrown.status().message(), "handler \"fake_throw\": fake backend: asked to throw");
}

TEST(HandlerFactoryBackendTest, BuiltinOfTheSameNameWins) {
  HandlerFactory f;
  BackendSpec spec = FakeBackend();
  spec.search_dirs = {"/nonexistent"};
  f.RegisterBackend(spec);
  f.RegisterBuiltin("fake_echo", [] { return std::make_unique<DummyHandler>(); });
  EXPECT_TRUE(f.Create("fake_echo", "").ok());
  EXPECT_FALSE(f.Create("fake_null", "").ok());
}

TEST(HandlerFactoryBackendTest, CompanionsLoadWithTheModuleAndMustLoad) {
  TempDir dir;
  {
    HandlerFactory f;
    LogLines log;
    f.SetLogger(log.Logger());
    BackendSpec spec = FakeBackend();
    spec.companions = {(dir.path() / "missing.so").string()};
    f.RegisterBackend(spec);
    auto h = f.Create("fake_echo", "");
    ASSERT_FALSE(h.ok());
    EXPECT_NE(h.status().message().find("handler \"fake_echo\" needs the fake backend "
                                        "(libtserve_fake.so): fake_companions: cannot load \"" +
                                        dir.str() + "/missing.so\": "),
              std::string::npos)
        << h.status().message();
    EXPECT_TRUE(log.lines.empty());
  }
  HandlerFactory f;
  LogLines log;
  f.SetLogger(log.Logger());
  BackendSpec spec = FakeBackend();
  spec.companions = {TSERVE_EXAMPLE_PLUGIN};  // any loadable library
  f.RegisterBackend(spec);
  ASSERT_TRUE(f.Create("fake_echo", "").ok());
  ASSERT_EQ(log.lines.size(), 2u);
  EXPECT_EQ(log.lines[1], "fake operators from " + std::string(TSERVE_EXAMPLE_PLUGIN));
}

TEST(HandlerFactoryBackendTest, DefaultDirsAreTheExecutablesAndItsLibTserve) {
  const fs::path exe = fs::read_symlink("/proc/self/exe");
  EXPECT_EQ(DefaultBackendDirs(),
            (std::vector<std::string>{exe.parent_path().string(),
                                      (exe.parent_path().parent_path() / "lib/tserve").string()}));
}

// ---- the TorchScript backend's declaration --------------------------------------------------

TEST(TorchBackendTest, DeclaresTheTorchHandlersWithoutLoadingAnything) {
  HandlerFactory f;
  ASSERT_TRUE(RegisterTorchBackend(&f, "none").ok());
  EXPECT_EQ(f.BuiltinNames(), (std::vector<std::string>{"image_classifier", "image_segmenter",
                                                        "llm", "object_detector", "tensor"}));
  // Nothing of LibTorch is mapped (this test runs before any that loads the module).
  std::ifstream maps("/proc/self/maps");
  const std::string mapped((std::istreambuf_iterator<char>(maps)),
                           std::istreambuf_iterator<char>());
  EXPECT_EQ(mapped.find("libtorch"), std::string::npos);
}

TEST(TorchBackendTest, ExtensionLibrariesAreCheckedNotLoaded) {
  TempDir dir;
  auto none = ResolveTorchExtensionLibraries(" none ");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto empty = ResolveTorchExtensionLibraries("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  auto automatic = ResolveTorchExtensionLibraries("auto");
  ASSERT_TRUE(automatic.ok());
  EXPECT_EQ(*automatic, access(kDebianTorchvisionOps, R_OK) == 0
                            ? std::vector<std::string>{kDebianTorchvisionOps}
                            : std::vector<std::string>{});
  WriteFile(dir.path() / "ops.so", "not even a library: loaded only with the backend");
  const std::string ops = (dir.path() / "ops.so").string();
  auto listed = ResolveTorchExtensionLibraries(" " + ops + " , ");
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(*listed, std::vector<std::string>{ops});

  const std::string missing = (dir.path() / "missing.so").string();
  HandlerFactory f;
  Status s = RegisterTorchBackend(&f, ops + "," + missing);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "torch_extension_libraries: cannot load \"" + missing +
                             "\": No such file or directory");
}

TEST(TorchBackendTest, WithoutTheModuleTheErrorNamesIt) {
  TempDir dir;
  HandlerFactory f;
  ASSERT_TRUE(RegisterTorchBackend(&f, "none", {dir.str()}).ok());
  auto h = f.Create("image_classifier", "");
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().message(),
            "handler \"image_classifier\" needs the TorchScript backend (libtserve_torch.so), "
            "which is not installed: looked in " +
                dir.str());
}

#ifdef TSERVE_TORCH_BACKEND
TEST(TorchBackendTest, TheModuleProvidesTheTorchHandlers) {
  HandlerFactory f;
  ASSERT_TRUE(
      RegisterTorchBackend(&f, "none", {fs::path(TSERVE_TORCH_BACKEND).parent_path().string()})
          .ok());
  for (const char* name : kTorchHandlerNames) {
    auto h = f.Create(name, "");
    ASSERT_TRUE(h.ok()) << name << ": " << h.status().message();
    // The module's own handler: it asks for the model's TorchScript file.
    ModelContext context;
    context.model_name = "m";
    try {
      (*h)->Initialize(context);
      ADD_FAILURE() << name << ": Initialize without a serialized file did not throw";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("has no serialized file"), std::string::npos)
          << e.what();
    }
  }
  // Its private code is hidden: only the entry points are exported.
  void* module = dlopen(TSERVE_TORCH_BACKEND, RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(module, nullptr);
  EXPECT_NE(dlsym(module, TSERVE_BACKEND_CREATE_SYMBOL), nullptr);
  EXPECT_EQ(dlsym(module, "_ZN6tserve7backend16MakeTensorHandlerEv"), nullptr);
  EXPECT_EQ(dlsym(module, "_ZN6tserve14TrimWhitespaceESt17basic_string_viewIcSt11char_traitsIcEE"),
            nullptr);
  dlclose(module);  // the reference NOLOAD took
}
#endif

}  // namespace
}  // namespace tserve::backend
