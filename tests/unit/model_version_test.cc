// The centre of the server: ModelManager's routing (names, versions, the default version)
// and ModelVersion's life (submit, scale, unload, shutdown), against a fake handler whose
// inference the test holds and releases. Assertions are what a user sees: answers, their
// status codes and messages, worker counts, and counters that add up exactly.
#include "serving/model_version.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include "metrics/metrics_yaml.h"
#include "serving/model_manager.h"

namespace tserve::serving {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr char kNoWorker[] =
    "Model \"m\" has no worker to serve inference request. Please use scale workers API to add "
    "workers.";

// What the fake handler does: echo each body, after waiting while the gate is closed.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = true;
  int inside = 0;  // batches waiting at the closed gate
  void Close() {
    std::lock_guard<std::mutex> lock(mu);
    open = false;
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu);
      open = true;
    }
    cv.notify_all();
  }
  // Blocks until `n` batches wait at the gate.
  void AwaitInside(int n) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return inside >= n; });
  }
  void Pass() {
    std::unique_lock<std::mutex> lock(mu);
    ++inside;
    cv.notify_all();
    cv.wait(lock, [&] { return open; });
    --inside;
  }
};

class FakeHandler final : public Handler {
 public:
  explicit FakeHandler(Gate* gate) : gate_(gate) {}
  void Initialize(const ModelContext&) override {}
  void Preprocess(Batch&) override {}
  void Inference(Batch&) override { gate_->Pass(); }
  void Postprocess(Batch& b) override {
    for (const auto& r : b.requests)
      b.responses.push_back({200, "text/plain", "echo:" + std::string(r.body)});
  }

 private:
  Gate* gate_;
};

// An answer and how many times the sink was finished.
struct Answer {
  std::future<JobResult> result;
  std::shared_ptr<std::atomic<int>> finishes;
};

class ModelVersionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tserve_mv_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    auto fams = metrics::ParseMetricsYaml(metrics::DefaultMetricsYaml(), "metrics.yaml");
    ASSERT_TRUE(fams.ok());
    ASSERT_TRUE(metrics::AddFamilies(*fams, &registry_).ok());
    factory_.RegisterBuiltin("fake", [this] { return std::make_unique<FakeHandler>(&gate_); });
  }
  void TearDown() override {
    gate_.Open();
    manager_.reset();
    fs::remove_all(root_);
  }

  ModelManager& Manager(size_t queue = 10, int per_model = 4, int total = 6) {
    ModelManager::Options o;
    o.model_store = root_;
    o.extract_root = root_ + "/extract";
    o.hostname = "h";
    o.job_queue_size = queue;
    o.max_workers_per_model = per_model;
    o.max_workers_total = total;
    manager_ = std::make_unique<ModelManager>(o, &factory_, &registry_);
    return *manager_;
  }

  // A model folder for `name` version `version` (handler "fake").
  ModelSpec Folder(const std::string& name, const std::string& version) {
    const std::string dir = root_ + "/" + name + "-" + version;
    fs::create_directories(dir + "/MAR-INF");
    std::ofstream(dir + "/MAR-INF/MANIFEST.json")
        << R"({"model": {"modelName": ")" << name << R"(", "modelVersion": ")" << version
        << R"(", "handler": "fake"}})";
    return {"", dir};
  }

  std::shared_ptr<ModelVersion> Load(const std::string& name, const std::string& version,
                                     int workers = 1) {
    LoadOverrides o;
    o.initial_workers = workers;
    auto v = manager_->LoadAndGet(Folder(name, version), false, o);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    if (!v.ok()) return nullptr;
    if (workers > 0) {
      EXPECT_EQ(ScaleAndWait(**v, workers, workers).first.code(), StatusCode::kOk);
    }
    return *v;
  }

  // Scales synchronously (wait_ready): the status and worker count `done` got.
  std::pair<Status, int> ScaleAndWait(ModelVersion& v, int min, int max) {
    std::promise<std::pair<Status, int>> p;
    auto f = p.get_future();
    Status s = v.Scale(min, max, true, [&p](const Status& status, int workers) {
      p.set_value({status, workers});
    });
    if (!s.ok()) return {s, -1};
    return f.get();
  }

  static Answer Submit(ModelVersion& v, std::string body, SubmitResult* result = nullptr,
                       bool explicit_version = false) {
    std::promise<JobResult> p;
    Answer a{p.get_future(), std::make_shared<std::atomic<int>>(0)};
    Payload payload{"id-" + body, std::move(body), "text/plain", explicit_version};
    SubmitResult r =
        v.Submit(std::move(payload),
                 ResponseSink::Of([p = std::move(p), n = a.finishes](JobResult jr) mutable {
                   ++*n;
                   p.set_value(std::move(jr));
                 }));
    if (result != nullptr) *result = r;
    return a;
  }

  // The counters of model m version 1.0 (shared with the version's own handles).
  ModelMetrics Counters(const std::string& name = "m", const std::string& version = "1.0") {
    auto m = ModelMetrics::Resolve(&registry_, name, version, "h");
    EXPECT_TRUE(m.ok());
    held_.push_back(*m);
    return *m;
  }
  void ReleaseCounters() {
    for (auto& m : held_) m.Release(&registry_);
    held_.clear();
  }

  std::string root_;
  metrics::Registry registry_;
  backend::HandlerFactory factory_;
  Gate gate_;
  std::vector<ModelMetrics> held_;
  std::unique_ptr<ModelManager> manager_;
};

// ---- the response path ----

TEST(ResponseSinkTest, FinishesOnceAndAsksItsTargetWhetherTheClientLeft) {
  int finishes = 0;
  std::unique_ptr<std::string> owned = std::make_unique<std::string>("move-only state");
  bool left = false;
  ResponseSink sink = ResponseSink::Of(
      [&finishes, o = std::move(owned)](JobResult r) {
        ++finishes;
        EXPECT_EQ(r.status, 201);
        EXPECT_EQ(*o, "move-only state");
      },
      [&left] { return left; });
  EXPECT_FALSE(sink.client_gone());
  left = true;
  EXPECT_TRUE(sink.client_gone());
  ResponseSink moved = std::move(sink);
  moved.Finish(JobResult::Answer(201, "text/plain", "x"));
  moved.Finish(JobResult::Answer(500, "text/plain", "again"));
  EXPECT_EQ(finishes, 1);
  EXPECT_TRUE(moved.finished());
}

// ---- routing ----

TEST_F(ModelVersionTest, FindRoutesByNameAndVersionAndTheFirstVersionIsTheDefault) {
  Manager();
  Load("m", "1.0");
  Load("m", "2.0");
  auto def = manager_->Find("m", "");
  ASSERT_TRUE(def.ok());
  EXPECT_EQ((*def)->version(), "1.0");
  auto two = manager_->Find("m", "2.0");
  ASSERT_TRUE(two.ok());
  EXPECT_EQ((*two)->version(), "2.0");
  auto versions = manager_->Versions("m");
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 2u);
  EXPECT_EQ((*versions)[0]->version(), "1.0");
  EXPECT_EQ((*versions)[1]->version(), "2.0");
  ASSERT_EQ(manager_->List().size(), 1u);  // one entry per model: its default
  EXPECT_EQ(manager_->List()[0]->version(), "1.0");
}

TEST_F(ModelVersionTest, UnknownModelAndUnknownVersionAreDifferentKinds) {
  Manager();
  Load("m", "1.0");
  auto no_model = manager_->Find("x", "");
  ASSERT_FALSE(no_model.ok());
  EXPECT_TRUE(no_model.status().IsModelNotFound());
  EXPECT_EQ(no_model.status().message(), "Model not found: x");
  auto no_versions = manager_->Versions("x");
  ASSERT_FALSE(no_versions.ok());
  EXPECT_TRUE(no_versions.status().IsModelNotFound());
  EXPECT_EQ(no_versions.status().message(), "Model not found: x");
  auto no_version = manager_->Find("m", "3.0");
  ASSERT_FALSE(no_version.ok());
  EXPECT_TRUE(no_version.status().IsVersionNotFound());
  EXPECT_EQ(no_version.status().message(), "Model version: 3.0 does not exist for model: m");
}

TEST_F(ModelVersionTest, SetDefaultChangesWhereUnversionedRequestsGo) {
  Manager();
  Load("m", "1.0");
  Load("m", "2.0");
  ASSERT_TRUE(manager_->SetDefault("m", "2.0").ok());
  EXPECT_EQ((*manager_->Find("m", ""))->version(), "2.0");
  Answer a = Submit(**manager_->Find("m", ""), "x");
  EXPECT_EQ(a.result.get().body, "echo:x");
  Status bad = manager_->SetDefault("m", "9.0");
  EXPECT_TRUE(bad.IsVersionNotFound());
  EXPECT_EQ(bad.message(), "Model version 9.0 does not exist for model m");
  EXPECT_TRUE(manager_->SetDefault("zz", "1.0").IsModelNotFound());
  EXPECT_EQ((*manager_->Find("m", ""))->version(), "2.0");  // unchanged by the failures
}

TEST_F(ModelVersionTest, LoadingAVersionTwiceIsAConflictAndKeepsTheFirst) {
  Manager();
  auto first = Load("m", "1.0");
  auto again = manager_->LoadAndGet(Folder("m", "1.0"), false, {});
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(again.status().IsAlreadyExists());
  EXPECT_EQ((*manager_->Find("m", "1.0")).get(), first.get());
  EXPECT_EQ(Submit(*first, "still").result.get().status, 200);
}

TEST_F(ModelVersionTest, UnregisterRefusesTheDefaultWhileOthersExist) {
  Manager();
  Load("m", "1.0");
  Load("m", "2.0");
  std::string removed;
  Status s = manager_->UnregisterAsync("m", "1.0", nullptr, &removed);
  EXPECT_TRUE(s.IsPermissionDenied());
  EXPECT_TRUE(manager_->UnregisterAsync("m", "7.0", nullptr, &removed).IsVersionNotFound());
  EXPECT_TRUE(manager_->UnregisterAsync("q", "", nullptr, &removed).IsModelNotFound());
  std::promise<void> gone;
  ASSERT_TRUE(manager_
                  ->UnregisterAsync(
                      "m", "2.0", [&gone](const Status&) { gone.set_value(); }, &removed)
                  .ok());
  EXPECT_EQ(removed, "2.0");
  gone.get_future().get();
  EXPECT_TRUE(manager_->Find("m", "2.0").status().IsVersionNotFound());
  // The last version may go; then the model is unknown.
  std::promise<void> last;
  ASSERT_TRUE(manager_
                  ->UnregisterAsync(
                      "m", "", [&last](const Status&) { last.set_value(); }, &removed)
                  .ok());
  last.get_future().get();
  EXPECT_TRUE(manager_->Find("m", "").status().IsModelNotFound());
}

// ---- scaling ----

TEST_F(ModelVersionTest, ScalingUpAndDownChangesTheWorkersDescribeShows) {
  Manager();
  auto v = Load("m", "1.0");
  auto [up, up_workers] = ScaleAndWait(*v, 3, 3);
  ASSERT_TRUE(up.ok()) << up.ToString();
  EXPECT_EQ(up_workers, 3);
  ModelDescription d = v->Describe();
  ASSERT_EQ(d.workers.size(), 3u);
  for (const auto& w : d.workers) EXPECT_STREQ(WorkerStateName(w.state), "READY");
  EXPECT_EQ(d.min_workers, 3);
  EXPECT_EQ(d.max_workers, 3);
  EXPECT_EQ(Counters().workers_min->Value(), 3.0);  // ts_workers_min follows minWorkers
  EXPECT_EQ(Counters().configured_batch_size->Value(), 1.0);
  auto [down, down_workers] = ScaleAndWait(*v, 1, 1);
  ASSERT_TRUE(down.ok());
  EXPECT_EQ(down_workers, 1);
  EXPECT_EQ(Counters().workers_min->Value(), 1.0);
  ReleaseCounters();
  EXPECT_EQ(v->Describe().workers.size(), 1u);
  EXPECT_TRUE(manager_->Healthy());
  EXPECT_EQ(Submit(*v, "after").result.get().body, "echo:after");
}

TEST_F(ModelVersionTest, AVersionHasTheManagersDefaultsAndAZeroPerModelLimitIsTheDerivedOne) {
  Manager(/*queue=*/7, /*per_model=*/0, /*total=*/0);
  auto v = Load("m", "1.0");
  ModelDescription d = v->Describe();
  EXPECT_EQ(d.queue_capacity, 7u);
  EXPECT_EQ(d.settings.batch_size, 1);
  EXPECT_EQ(d.settings.max_batch_delay_ms, 100);
  EXPECT_EQ(d.settings.response_timeout_s, 120);
  const int limit = ModelManager::DefaultMaxWorkersPerModel();
  Status over = v->Scale(limit + 1, limit + 1, false, nullptr);
  EXPECT_TRUE(over.IsInvalidArgument());
  EXPECT_EQ(over.message(), "min_worker " + std::to_string(limit + 1) + " exceeds the limit of " +
                                std::to_string(limit) +
                                " workers per model (max_workers_per_model)");
}

// ts_configured_batch_size and ts_workers_min show what the version was registered with.
TEST_F(ModelVersionTest, TheConfiguredBatchSizeAndMinWorkersAreGauges) {
  Manager();
  LoadOverrides o;
  o.initial_workers = 2;
  o.batch_size = 8;
  auto v = manager_->LoadAndGet(Folder("b", "2.0"), false, o);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  ModelMetrics m = Counters("b", "2.0");
  EXPECT_EQ(m.configured_batch_size->Value(), 8.0);
  EXPECT_EQ(m.workers_min->Value(), 2.0);
  ReleaseCounters();
}

TEST_F(ModelVersionTest, ScalingPastAWorkerLimitIsRefusedAndChangesNothing) {
  Manager(/*queue=*/10, /*per_model=*/4, /*total=*/6);
  auto a = Load("m", "1.0");
  auto b = Load("n", "1.0");
  Status per_model = a->Scale(5, 5, false, nullptr);
  EXPECT_TRUE(per_model.IsInvalidArgument());
  EXPECT_NE(per_model.message().find("max_workers_per_model"), std::string::npos);
  ASSERT_TRUE(ScaleAndWait(*a, 4, 4).first.ok());
  Status total = b->Scale(4, 4, false, nullptr);  // 4 + 4 > 6
  EXPECT_TRUE(total.IsInvalidArgument());
  EXPECT_NE(total.message().find("max_workers_total"), std::string::npos);
  EXPECT_EQ(b->Describe().workers.size(), 1u);
  // A refusal also reaches `done`, at once: a caller may move its only way to answer there.
  Status told;
  EXPECT_TRUE(
      b->Scale(4, 4, true, [&told](const Status& st, int) { told = st; }).IsInvalidArgument());
  EXPECT_TRUE(told.IsInvalidArgument());
  std::promise<Status> refusal;
  EXPECT_FALSE(manager_
                   ->UnregisterAsync(
                       "zz", "", [&refusal](const Status& st) { refusal.set_value(st); }, nullptr)
                   .ok());
  EXPECT_TRUE(refusal.get_future().get().IsModelNotFound());
  // Shrinking one makes room for the other.
  ASSERT_TRUE(ScaleAndWait(*a, 1, 1).first.ok());
  EXPECT_TRUE(ScaleAndWait(*b, 4, 4).first.ok());
}

// ---- submitting ----

TEST_F(ModelVersionTest, SubmitAnswersThroughTheSinkAndCountsOnArrival) {
  Manager();
  auto v = Load("m", "1.0");
  ModelMetrics c = Counters();
  Answer a = Submit(*v, "hello");
  Answer b = Submit(*v, "versioned", nullptr, /*explicit_version=*/true);
  JobResult r = a.result.get();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain");
  EXPECT_EQ(r.body, "echo:hello");
  EXPECT_EQ(b.result.get().body, "echo:versioned");
  EXPECT_EQ(c.by_default.requests->Value(), 1.0);
  EXPECT_EQ(c.by_explicit.requests->Value(), 1.0);
  EXPECT_EQ(c.request_duration->Count(), 2u);
  EXPECT_EQ(*a.finishes, 1);
  ReleaseCounters();
}

TEST_F(ModelVersionTest, NoWorkerAndQueueFullAnswerTheSame503ButCountApart) {
  Manager(/*queue=*/1);
  auto idle = Load("m", "1.0", /*workers=*/0);
  ModelMetrics c = Counters();
  SubmitResult result;
  Answer none = Submit(*idle, "nobody", &result);
  EXPECT_EQ(result, SubmitResult::kNoWorker);
  JobResult r = none.result.get();
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.error_type, "ServiceUnavailableException");
  EXPECT_EQ(r.body, kNoWorker);
  EXPECT_EQ(c.fail_no_worker->Value(), 1.0);
  EXPECT_EQ(c.fail_queue_full->Value(), 0.0);

  ASSERT_TRUE(ScaleAndWait(*idle, 1, 1).first.ok());
  gate_.Close();
  Answer running = Submit(*idle, "running");
  gate_.AwaitInside(1);
  Answer queued = Submit(*idle, "queued", &result);
  EXPECT_EQ(result, SubmitResult::kAccepted);
  Answer full = Submit(*idle, "full", &result);
  EXPECT_EQ(result, SubmitResult::kQueueFull);
  JobResult f = full.result.get();
  EXPECT_EQ(f.status, 503);
  EXPECT_EQ(f.body, kNoWorker);  // the bytes TorchServe's clients know
  EXPECT_EQ(c.fail_queue_full->Value(), 1.0);
  EXPECT_EQ(c.fail_no_worker->Value(), 1.0);
  gate_.Open();
  EXPECT_EQ(running.result.get().status, 200);
  EXPECT_EQ(queued.result.get().status, 200);
  // Every request counted ends in one outcome: 2 successes + 2 refusals.
  EXPECT_EQ(c.by_default.requests->Value(), 4.0);
  EXPECT_EQ(c.request_duration->Count(), 2u);
  ReleaseCounters();
}

TEST_F(ModelVersionTest, ABadPayloadIsCountedAsArrivedAndAsBadInput) {
  Manager();
  auto v = Load("m", "1.0");
  ModelMetrics c = Counters();
  v->RecordBadInput(false);
  EXPECT_EQ(c.by_default.requests->Value(), 1.0);
  EXPECT_EQ(c.fail_bad_input->Value(), 1.0);
  ReleaseCounters();
}

// ---- unloading ----

TEST_F(ModelVersionTest, UnregisterLetsQueuedRequestsFinishEachAnsweredOnce) {
  Manager();
  auto v = Load("m", "1.0");
  ModelMetrics c = Counters();
  gate_.Close();
  Answer running = Submit(*v, "a");
  gate_.AwaitInside(1);
  Answer q1 = Submit(*v, "b");
  Answer q2 = Submit(*v, "c");
  std::promise<void> gone;
  std::string removed;
  ASSERT_TRUE(manager_
                  ->UnregisterAsync(
                      "m", "", [&gone](const Status&) { gone.set_value(); }, &removed)
                  .ok());
  // No longer routed to at once, while its queue still drains.
  EXPECT_TRUE(manager_->Find("m", "").status().IsModelNotFound());
  v.reset();
  gate_.Open();
  for (Answer* a : {&running, &q1, &q2}) {
    JobResult r = a->result.get();
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(*a->finishes, 1);
  }
  gone.get_future().get();
  EXPECT_EQ(c.request_duration->Count(), 3u);
  EXPECT_EQ(c.fail_unloaded->Value(), 0.0);
  ReleaseCounters();
}

TEST_F(ModelVersionTest, ShutdownAnswersQueuedRequests503AndCountsEachOnce) {
  Manager();
  auto v = Load("m", "1.0");
  ModelMetrics c = Counters();
  gate_.Close();
  Answer running = Submit(*v, "a");
  gate_.AwaitInside(1);
  Answer q1 = Submit(*v, "b");
  Answer q2 = Submit(*v, "c");
  std::thread opener([this, &v] {
    // Shutdown waits for the running batch: let it finish once the workers were told to
    // stop (they leave the table first), so the queued ones are the shutdown's to answer.
    while (!v->Describe().workers.empty()) std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(50ms);
    gate_.Open();
  });
  manager_->Shutdown();
  opener.join();
  EXPECT_EQ(running.result.get().status, 200);
  for (Answer* a : {&q1, &q2}) {
    JobResult r = a->result.get();
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(r.body, "Model \"m\" is being unloaded");
    EXPECT_EQ(*a->finishes, 1);
  }
  EXPECT_EQ(c.fail_unloaded->Value(), 2.0);
  EXPECT_EQ(c.request_duration->Count(), 1u);
  ReleaseCounters();
}

TEST_F(ModelVersionTest, AnUnloadedVersionGivesItsWorkersBackToTheBudget) {
  Manager(/*queue=*/10, /*per_model=*/4, /*total=*/4);
  Load("m", "1.0", 4);
  auto refused = manager_->LoadAndGet(Folder("n", "1.0"), false, [] {
    LoadOverrides o;
    o.initial_workers = 1;
    return o;
  }());
  EXPECT_TRUE(refused.status().IsInvalidArgument());
  std::promise<void> gone;
  std::string removed;
  ASSERT_TRUE(manager_
                  ->UnregisterAsync(
                      "m", "", [&gone](const Status&) { gone.set_value(); }, &removed)
                  .ok());
  gone.get_future().get();
  EXPECT_NE(Load("n", "1.0", 4), nullptr);
}

}  // namespace
}  // namespace tserve::serving
