// JPEG/PNG decoding and the image_classifier's preprocessing (resize the shorter side to
// 256, centre crop 224, normalize), as the TorchScript handler runs them on a request body.
// For small images it also checks the documented equality
//   ResizeShorterSideAndCenterCrop(i, s, w, h) == CenterCrop(ResizeShorterSide(i, s), w, h)
// with sizes taken from the input's last bytes.
#include <array>
#include <string_view>
#include <vector>

#include "backend/image.h"
#include "fuzz_util.h"

namespace be = tserve::backend;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto image = be::DecodeImage(bytes);
  if (!image.ok()) {
    TSERVE_FUZZ_CHECK(!image.status().message().empty());
    return 0;
  }
  const be::RgbImage& img = image.value();
  TSERVE_FUZZ_CHECK(img.width > 0 && img.height > 0);
  TSERVE_FUZZ_CHECK(static_cast<int64_t>(img.width) * img.height <= be::kMaxImagePixels);
  TSERVE_FUZZ_CHECK(img.pixels.size() == static_cast<size_t>(img.width) * img.height * 3);

  be::RgbImage crop = be::ResizeShorterSideAndCenterCrop(img, 256, 224, 224);
  TSERVE_FUZZ_CHECK(crop.width == 224 && crop.height == 224);
  TSERVE_FUZZ_CHECK(crop.pixels.size() == 224u * 224u * 3u);
  std::vector<float> chw = be::ToNormalizedChw(crop, be::kImageNetMean, be::kImageNetStd);
  TSERVE_FUZZ_CHECK(chw.size() == 3u * 224u * 224u);

  if (static_cast<int64_t>(img.width) * img.height <= 4096 && size >= 3) {
    const int s = 1 + data[size - 1] % 96;
    const int w = 1 + data[size - 2] % 96;
    const int h = 1 + data[size - 3] % 96;
    const be::ImageSize rs = be::ResizedSize(img.width, img.height, s);
    if (static_cast<int64_t>(rs.width) * rs.height <= 1 << 20) {
      be::RgbImage a = be::ResizeShorterSideAndCenterCrop(img, s, w, h);
      be::RgbImage b = be::CenterCrop(be::ResizeShorterSide(img, s), w, h);
      TSERVE_FUZZ_CHECK(a.width == w && a.height == h);
      TSERVE_FUZZ_CHECK(a.width == b.width && a.height == b.height && a.pixels == b.pixels);
    }
  }
  return 0;
}
