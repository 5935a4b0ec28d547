#include "serving/model_metrics.h"

namespace tserve::serving {

namespace {

// Collects the first error of a series of resolutions.
class Resolver {
 public:
  explicit Resolver(metrics::Registry* r) : r_(r) {}
  metrics::Counter* C(std::string_view name, const metrics::Labels& l) {
    auto s = r_->CounterFor(name, l);
    return Keep(s);
  }
  metrics::Gauge* G(std::string_view name, const metrics::Labels& l) {
    auto s = r_->GaugeFor(name, l);
    return Keep(s);
  }
  metrics::Histogram* H(std::string_view name, const metrics::Labels& l) {
    auto s = r_->HistogramFor(name, l);
    return Keep(s);
  }
  const Status& status() const { return status_; }

 private:
  template <typename T>
  T* Keep(StatusOr<T*>& s) {
    if (!s.ok()) {
      if (status_.ok()) status_ = s.status();
      return nullptr;
    }
    return *s;
  }
  metrics::Registry* r_;
  Status status_;
};

}  // namespace

StatusOr<ModelMetrics> ModelMetrics::Resolve(metrics::Registry* registry, const std::string& model,
                                             const std::string& version,
                                             const std::string& hostname) {
  Resolver r(registry);
  ModelMetrics m;
  auto labelled = [&](VersionLabelled* out, const std::string& v) {
    const metrics::Labels l = {{"model_name", model}, {"model_version", v}, {"hostname", hostname}};
    out->requests = r.C("ts_inference_requests_total", l);
    out->latency_us = r.C("ts_inference_latency_microseconds", l);
    out->queue_latency_us = r.C("ts_queue_latency_microseconds", l);
  };
  labelled(&m.by_default, "default");
  labelled(&m.by_explicit, version);
  const metrics::Labels host = {{"Level", "Host"}, {"Hostname", hostname}};
  m.queue_time_ms = r.G("QueueTime", host);
  m.worker_thread_time_ms = r.G("WorkerThreadTime", host);
  const metrics::Labels model_level = {
      {"ModelName", model}, {"Level", "Model"}, {"Hostname", hostname}};
  m.handler_time_ms = r.G("HandlerTime", model_level);
  m.prediction_time_ms = r.G("PredictionTime", model_level);

  const metrics::Labels mv = {{"model_name", model}, {"model_version", version}};
  m.request_duration = r.H("ts_request_duration_seconds", mv);
  m.queue_duration = r.H("ts_queue_duration_seconds", mv);
  m.handler_duration = r.H("ts_handler_duration_seconds", mv);
  m.batch_size = r.H("ts_batch_size", mv);
  m.queue_depth = r.G("ts_queue_depth", mv);
  auto state = [&](const char* s) {
    return r.G("ts_workers", {{"model_name", model}, {"model_version", version}, {"state", s}});
  };
  m.workers_starting = state("starting");
  m.workers_ready = state("ready");
  m.workers_failed = state("failed");
  m.workers_min = r.G("ts_workers_min", mv);
  m.worker_load_failures = r.C("ts_worker_load_failures_total", mv);
  m.configured_batch_size = r.G("ts_configured_batch_size", mv);
  auto reason = [&](const char* why) {
    return r.C("ts_inference_failures_total",
               {{"model_name", model}, {"model_version", version}, {"reason", why}});
  };
  m.fail_queue_full = reason("queue_full");
  m.fail_no_worker = reason("no_worker");
  m.fail_timeout = reason("timeout");
  m.fail_handler_error = reason("handler_error");
  m.fail_bad_input = reason("bad_input");
  m.fail_unloaded = reason("unloaded");
  m.fail_client_disconnected = reason("client_disconnected");
  m.fail_response_too_large = reason("response_too_large");
  Generation& g = m.generation;
  g.time_to_first_token = r.H("ts_time_to_first_token_seconds", mv);
  g.inter_token_latency = r.H("ts_inter_token_latency_seconds", mv);
  g.e2e_latency = r.H("ts_e2e_request_latency_seconds", mv);
  g.queue_time = r.H("ts_request_queue_time_seconds", mv);
  g.prompt_tokens = r.H("ts_request_prompt_tokens", mv);
  g.generation_tokens = r.H("ts_request_generation_tokens", mv);
  g.prompt_tokens_total = r.C("ts_prompt_tokens_total", mv);
  g.generation_tokens_total = r.C("ts_generation_tokens_total", mv);
  auto finished = [&](const char* why) {
    return r.C("ts_request_success_total",
               {{"model_name", model}, {"model_version", version}, {"finished_reason", why}});
  };
  g.success_stop = finished("stop");
  g.success_length = finished("length");
  g.success_abort = finished("abort");
  g.running = r.G("ts_num_requests_running", mv);
  g.waiting = r.G("ts_num_requests_waiting", mv);
  g.kv_cache_usage = r.G("ts_kv_cache_usage_perc", mv);
  if (!r.status().ok()) {
    m.Release(registry);  // what resolved before the error
    return r.status();
  }
  // tserve's own counters are on /metrics at 0 from the model's load, so the first failures
  // after a start show in rate()/increase() (a series born with its first increment reads
  // as no increase). TorchServe's families keep TorchServe's "appears when first recorded".
  for (metrics::Counter* c :
       {m.fail_queue_full, m.fail_no_worker, m.fail_timeout, m.fail_handler_error, m.fail_bad_input,
        m.fail_unloaded, m.fail_client_disconnected, m.fail_response_too_large,
        m.worker_load_failures}) {
    c->Expose();
  }
  return m;
}

void ModelMetrics::Release(metrics::Registry* registry) {
  auto release = [registry](auto*& series) {
    registry->Release(series);
    series = nullptr;
  };
  for (VersionLabelled* l : {&by_default, &by_explicit}) {
    release(l->requests);
    release(l->latency_us);
    release(l->queue_latency_us);
  }
  // QueueTime and WorkerThreadTime are host-level (one series, whatever the models): kept.
  queue_time_ms = nullptr;
  worker_thread_time_ms = nullptr;
  release(handler_time_ms);
  release(prediction_time_ms);
  release(request_duration);
  release(queue_duration);
  release(handler_duration);
  release(batch_size);
  release(queue_depth);
  release(workers_starting);
  release(workers_ready);
  release(workers_failed);
  release(workers_min);
  release(worker_load_failures);
  release(configured_batch_size);
  Generation& g = generation;
  for (metrics::Histogram** h : {&g.time_to_first_token, &g.inter_token_latency, &g.e2e_latency,
                                 &g.queue_time, &g.prompt_tokens, &g.generation_tokens}) {
    release(*h);
  }
  for (metrics::Counter** c : {&g.prompt_tokens_total, &g.generation_tokens_total, &g.success_stop,
                               &g.success_length, &g.success_abort}) {
    release(*c);
  }
  for (metrics::Gauge** x : {&g.running, &g.waiting, &g.kv_cache_usage}) release(*x);
  release(fail_queue_full);
  release(fail_no_worker);
  release(fail_timeout);
  release(fail_handler_error);
  release(fail_bad_input);
  release(fail_unloaded);
  release(fail_client_disconnected);
  release(fail_response_too_large);
}

StatusOr<metrics::Gauge*> WorkerLoadTimeGauge(metrics::Registry* registry,
                                              const std::string& worker_name,
                                              const std::string& hostname) {
  return registry->GaugeFor(
      "WorkerLoadTime", {{"WorkerName", worker_name}, {"Level", "Host"}, {"Hostname", hostname}});
}

void RemoveWorkerLoadTime(metrics::Registry* registry, const std::string& worker_name,
                          const std::string& hostname) {
  if (metrics::Family* f = registry->Find("WorkerLoadTime")) {
    f->Remove({{"WorkerName", worker_name}, {"Level", "Host"}, {"Hostname", hostname}});
  }
}

}  // namespace tserve::serving
