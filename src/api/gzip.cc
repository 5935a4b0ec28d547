#include "api/gzip.h"

#include <zlib.h>

namespace tserve::api {

namespace {

// One deflate stream per thread, reset between bodies: deflateInit2 allocates ~256 KiB,
// which per scrape cost more than compressing a small body.
class ThreadDeflater {
 public:
  ~ThreadDeflater() {
    if (ready_) deflateEnd(&zs_);
  }
  z_stream* Get(int level) {
    if (ready_ && level != level_) {
      deflateEnd(&zs_);
      ready_ = false;
    }
    if (!ready_) {
      zs_ = z_stream{};
      // 15 window bits + 16: write a gzip header and trailer instead of zlib's.
      if (deflateInit2(&zs_, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        return nullptr;
      }
      ready_ = true;
      level_ = level;
    } else if (deflateReset(&zs_) != Z_OK) {
      return nullptr;
    }
    return &zs_;
  }

 private:
  z_stream zs_{};
  bool ready_ = false;
  int level_ = 0;
};

}  // namespace

StatusOr<std::string> Gzip(std::string_view in, int level) {
  thread_local ThreadDeflater deflater;
  z_stream* zs = deflater.Get(level);
  if (zs == nullptr) return Status::Internal("deflateInit2 failed");
  std::string out;
  out.resize(deflateBound(zs, static_cast<uLong>(in.size())) + 32);
  zs->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs->avail_in = static_cast<uInt>(in.size());
  zs->next_out = reinterpret_cast<Bytef*>(out.data());
  zs->avail_out = static_cast<uInt>(out.size());
  int rc = deflate(zs, Z_FINISH);
  size_t written = out.size() - zs->avail_out;
  if (rc != Z_STREAM_END) return Status::Internal("deflate failed");
  out.resize(written);
  return out;
}

StatusOr<std::string> Gunzip(std::string_view in) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return Status::Internal("inflateInit2 failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::string out;
  char buf[16384];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      return Status::InvalidArgument("not a valid gzip stream");
    }
    out.append(buf, sizeof(buf) - zs.avail_out);
    if (rc == Z_OK && zs.avail_in == 0 && zs.avail_out != 0) {
      inflateEnd(&zs);
      return Status::InvalidArgument("truncated gzip stream");
    }
  }
  inflateEnd(&zs);
  return out;
}

}  // namespace tserve::api
