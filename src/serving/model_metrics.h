#pragma once

#include <string>

#include "common/status.h"
#include "metrics/registry.h"

namespace tserve::serving {

// The catalog of serving metrics: every series one model version records into, resolved
// once when the model is loaded, so the request path records through these pointers with
// no lookup, lock or allocation. Families missing from metrics.yaml get detached series.
//
// TorchServe's families keep its semantics: ts_* counters use model_version "default" when
// the URL named no version, the explicit version otherwise; QueueTime and WorkerThreadTime
// are host-level last values; HandlerTime/PredictionTime are per model name.
struct ModelMetrics {
  struct VersionLabelled {
    metrics::Counter* requests = nullptr;          // ts_inference_requests_total
    metrics::Counter* latency_us = nullptr;        // ts_inference_latency_microseconds
    metrics::Counter* queue_latency_us = nullptr;  // ts_queue_latency_microseconds
  };
  VersionLabelled by_default;   // model_version="default"
  VersionLabelled by_explicit;  // model_version="<version>"

  metrics::Gauge* queue_time_ms = nullptr;          // QueueTime{Level="Host"}
  metrics::Gauge* worker_thread_time_ms = nullptr;  // WorkerThreadTime{Level="Host"}
  metrics::Gauge* handler_time_ms = nullptr;        // HandlerTime{ModelName,Level="Model"}
  metrics::Gauge* prediction_time_ms = nullptr;     // PredictionTime{ModelName,Level="Model"}

  // tserve's own, labelled model_name and the real model_version.
  metrics::Histogram* request_duration = nullptr;
  metrics::Histogram* queue_duration = nullptr;
  metrics::Histogram* handler_duration = nullptr;
  metrics::Histogram* batch_size = nullptr;
  metrics::Gauge* queue_depth = nullptr;
  metrics::Gauge* workers_starting = nullptr;
  metrics::Gauge* workers_ready = nullptr;
  metrics::Gauge* workers_failed = nullptr;
  metrics::Gauge* workers_min = nullptr;             // ts_workers_min: minWorkers now
  metrics::Counter* worker_load_failures = nullptr;  // ts_worker_load_failures_total
  metrics::Gauge* configured_batch_size = nullptr;   // ts_configured_batch_size
  metrics::Counter* fail_queue_full = nullptr;
  metrics::Counter* fail_no_worker = nullptr;
  metrics::Counter* fail_timeout = nullptr;
  metrics::Counter* fail_handler_error = nullptr;
  metrics::Counter* fail_bad_input = nullptr;
  metrics::Counter* fail_unloaded = nullptr;             // queued when the model was unloaded
  metrics::Counter* fail_client_disconnected = nullptr;  // client gone while queued
  metrics::Counter* fail_response_too_large = nullptr;   // over max_response_size (500)

  // Generation (a GenerativeHandler; docs/llm.md). Untouched, so absent from /metrics, for
  // other models.
  struct Generation {
    metrics::Histogram* time_to_first_token = nullptr;
    metrics::Histogram* inter_token_latency = nullptr;
    metrics::Histogram* e2e_latency = nullptr;
    metrics::Histogram* queue_time = nullptr;
    metrics::Histogram* prompt_tokens = nullptr;      // per request
    metrics::Histogram* generation_tokens = nullptr;  // per request
    metrics::Counter* prompt_tokens_total = nullptr;
    metrics::Counter* generation_tokens_total = nullptr;
    metrics::Counter* success_stop = nullptr;  // ts_request_success_total{finished_reason}
    metrics::Counter* success_length = nullptr;
    metrics::Counter* success_abort = nullptr;
    metrics::Gauge* running = nullptr;
    metrics::Gauge* waiting = nullptr;
    metrics::Gauge* kv_cache_usage = nullptr;
  };
  Generation generation;

  // Every request counted in `requests` ends in exactly one of: a success (observed in
  // request_duration) or one fail_* counter. docs/metrics.md states the invariant.
  static StatusOr<ModelMetrics> Resolve(metrics::Registry* registry, const std::string& model,
                                        const std::string& version, const std::string& hostname);
  // Gives back every series Resolve took (Registry::Release): those no other model version
  // shares leave /metrics. Call once, when nothing records through these handles any more;
  // the handles are null afterwards.
  void Release(metrics::Registry* registry);
};

// WorkerLoadTime{WorkerName="W-<port>-<model>_<version>",Level="Host"} of one worker.
// TorchServe names workers after their backend port (9000 and up); tserve's workers are
// threads, numbered from 9000 the same way so dashboards keyed on the name keep working.
StatusOr<metrics::Gauge*> WorkerLoadTimeGauge(metrics::Registry* registry,
                                              const std::string& worker_name,
                                              const std::string& hostname);
void RemoveWorkerLoadTime(metrics::Registry* registry, const std::string& worker_name,
                          const std::string& hostname);

}  // namespace tserve::serving
