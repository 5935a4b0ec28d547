// Image decoding and torchvision-style preprocessing (backend/image.h).
//
// Expected values come from PIL 9.4 and torchvision 0.14 (Debian 12's python3-pil and
// python3-torchvision) on the fixtures in tests/fixtures/images, which
// scripts/make_test_fixtures.py writes; `/usr/bin/python3 scripts/make_test_fixtures.py
// --print-expected` prints every constant below (regenerate both together).
//
// Measured against PIL (max abs difference, on 8-bit pixels): 0. Decoding (JPEG baseline,
// progressive, 4:2:0 and 4:4:4; PNG of every colour type) and Resize(256) / CenterCrop(224)
// equal PIL + torchvision pixel for pixel, and the normalized float tensor equals
// torchvision's bit for bit: image.cc transcribes Pillow 9.4's fixed-point resampling, and
// both sides use libjpeg-turbo's default decoder. Checked when this was written on noisy
// gradients of 640x480, 500x375, 1024x683, 375x500, 200x150, 257x256, 1920x1080 and
// 300x1200 (JPEG and PNG), beyond the fixtures below.

#include "backend/image.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <ostream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

// Writers for the synthetic images below (jpeglib.h needs FILE and size_t first).
#include <cstddef>
#include <cstdio>

#include <jpeglib.h>
#include <png.h>

namespace tserve::backend {
namespace {

std::string ReadFixture(const std::string& relative) {
  const std::string path = std::string(TSERVE_FIXTURES_DIR) + "/" + relative;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

RgbImage DecodeFixture(const std::string& relative) {
  StatusOr<RgbImage> image = DecodeImage(ReadFixture(relative));
  EXPECT_TRUE(image.ok()) << relative << ": " << image.status().message();
  return image.ok() ? std::move(image).value() : RgbImage{};
}

struct Rgb {
  int r, g, b;
  bool operator==(const Rgb&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Rgb& p) {
  return os << "(" << p.r << ", " << p.g << ", " << p.b << ")";
}

Rgb Pixel(const RgbImage& image, int x, int y) {
  const size_t i = (static_cast<size_t>(y) * image.width + x) * 3;
  return {image.pixels[i], image.pixels[i + 1], image.pixels[i + 2]};
}

// The script's checksum(): sum of bytes, and sum of byte * (i % 251 + 1), mod 2^32.
std::pair<uint32_t, uint32_t> Checksum(const RgbImage& image) {
  uint32_t sum = 0;
  uint32_t weighted = 0;
  for (size_t i = 0; i < image.pixels.size(); ++i) {
    sum += image.pixels[i];
    weighted += image.pixels[i] * static_cast<uint32_t>(i % 251 + 1);
  }
  return {sum, weighted};
}

int MaxAbsDifference(const RgbImage& a, const RgbImage& b) {
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  if (a.pixels.size() != b.pixels.size()) return 256;
  int max = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    max = std::max(max, std::abs(int{a.pixels[i]} - int{b.pixels[i]}));
  }
  return max;
}

// A width x height image whose pixel (x, y) is (x + 1, y + 1, 7).
RgbImage Coordinates(int width, int height) {
  RgbImage image{width, height, {}};
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.pixels.push_back(static_cast<uint8_t>(x + 1));
      image.pixels.push_back(static_cast<uint8_t>(y + 1));
      image.pixels.push_back(7);
    }
  }
  return image;
}

// ---- decoding ---------------------------------------------------------------------------

TEST(DecodeImageTest, JpegMatchesPil) {
  const RgbImage image = DecodeFixture("images/kitten_small.jpg");
  EXPECT_EQ(image.width, 64);
  EXPECT_EQ(image.height, 48);
  EXPECT_EQ(Pixel(image, 0, 0), (Rgb{0, 0, 2}));
  EXPECT_EQ(Pixel(image, 63, 47), (Rgb{254, 237, 97}));
  EXPECT_EQ(Pixel(image, 40, 20), (Rgb{252, 199, 33}));
  EXPECT_EQ(Pixel(image, 10, 35), (Rgb{7, 22, 237}));
  EXPECT_EQ(Pixel(image, 31, 17), (Rgb{237, 188, 130}));
  // Every pixel: the checksum of PIL's decoding.
  EXPECT_EQ(Checksum(image), (std::pair<uint32_t, uint32_t>{1122414, 141620663}));
}

TEST(DecodeImageTest, PngMatchesPil) {
  const RgbImage image = DecodeFixture("images/kitten_small.png");
  EXPECT_EQ(image.width, 64);
  EXPECT_EQ(image.height, 48);
  EXPECT_EQ(Pixel(image, 0, 0), (Rgb{0, 0, 0}));
  EXPECT_EQ(Pixel(image, 63, 47), (Rgb{252, 235, 145}));
  EXPECT_EQ(Pixel(image, 40, 20), (Rgb{250, 200, 30}));
  EXPECT_EQ(Pixel(image, 10, 35), (Rgb{10, 20, 240}));
  EXPECT_EQ(Pixel(image, 31, 17), (Rgb{250, 200, 30}));
}

TEST(DecodeImageTest, EveryColourTypeConvertsToRgbAsPil) {
  // images/modes: 8x6 images; expected = checksum of PIL's convert("RGB") (gray16: the high
  // bytes, where PIL would clip; see the script).
  const std::pair<const char*, std::pair<uint32_t, uint32_t>> cases[] = {
      {"gray8.png", {18747, 1590444}},         {"gray1.png", {19125, 1653930}},
      {"gray4.png", {18360, 1482570}},         {"gray_alpha.png", {18747, 1590444}},
      {"rgba.png", {18274, 1470092}},          {"palette.png", {18274, 1470092}},
      {"palette4_trns.png", {18001, 1418031}}, {"interlaced.png", {18274, 1470092}},
      {"rgb16.png", {18274, 1470092}},         {"gray16.png", {19938, 1499820}},
      {"gray.jpg", {18732, 1590162}},          {"cmyk.jpg", {18271, 1469306}},
  };
  for (const auto& [name, expected] : cases) {
    SCOPED_TRACE(name);
    const RgbImage image = DecodeFixture(std::string("images/modes/") + name);
    EXPECT_EQ(image.width, 8);
    EXPECT_EQ(image.height, 6);
    EXPECT_EQ(Checksum(image), expected);
  }
}

TEST(DecodeImageTest, GarbageIsInvalidArgumentNamingTheBytes) {
  StatusOr<RgbImage> image = DecodeImage("{\"data\": [1, 2, 3]}");
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(image.status().message(),
            "not a JPEG or PNG image (19 bytes, first bytes 7b 22 64 61 74 61 22 3a ...)");

  image = DecodeImage("");
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().message(), "not a JPEG or PNG image (empty body)");

  image = DecodeImage("\xff\xd8");  // too short to be a JPEG
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().message(), "not a JPEG or PNG image (2 bytes, first bytes ff d8)");
}

TEST(DecodeImageTest, TruncatedJpegIsAnErrorNotACrash) {
  const std::string jpeg = ReadFixture("images/kitten_small.jpg");
  // Cut in the entropy-coded data (libjpeg would pad with gray; PIL refuses), in the
  // headers, and right after the SOI marker.
  for (size_t length : {jpeg.size() - 2, jpeg.size() / 2, size_t{100}, size_t{3}}) {
    SCOPED_TRACE(length);
    StatusOr<RgbImage> image = DecodeImage(std::string_view(jpeg).substr(0, length));
    ASSERT_FALSE(image.ok());
    EXPECT_EQ(image.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(image.status().message().rfind("invalid JPEG image: ", 0), 0u)
        << image.status().message();
  }
}

TEST(DecodeImageTest, CorruptJpegIsAnError) {
  std::string jpeg = ReadFixture("images/kitten_small.jpg");
  // Overwrite everything after the SOI marker.
  for (size_t i = 4; i < jpeg.size(); ++i) jpeg[i] = static_cast<char>(i * 7);
  StatusOr<RgbImage> image = DecodeImage(jpeg);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().message().rfind("invalid JPEG image: ", 0), 0u);
}

TEST(DecodeImageTest, TruncatedOrCorruptPngIsAnError) {
  const std::string png = ReadFixture("images/kitten_small.png");
  for (size_t length : {png.size() - 20, png.size() / 2, size_t{30}, size_t{8}}) {
    SCOPED_TRACE(length);
    StatusOr<RgbImage> image = DecodeImage(std::string_view(png).substr(0, length));
    ASSERT_FALSE(image.ok());
    EXPECT_EQ(image.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(image.status().message().rfind("invalid PNG image: ", 0), 0u)
        << image.status().message();
  }
  std::string corrupt = png;
  corrupt[20] ^= 0x55;  // inside IHDR: its CRC no longer matches
  StatusOr<RgbImage> image = DecodeImage(corrupt);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().message().rfind("invalid PNG image: ", 0), 0u);
}

uint32_t Crc32(std::string_view data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (char ch : data) {
    crc ^= static_cast<uint8_t>(ch);
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void PutBigEndian32(std::string* s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*s)[at + i] = static_cast<char>(v >> (24 - 8 * i));
}

TEST(DecodeImageTest, RejectsDecompressionBombs) {
  // The fixtures with their declared size raised to 10000 x 10000 (100 megapixels).
  std::string png = ReadFixture("images/kitten_small.png");
  PutBigEndian32(&png, 16, 10000);  // IHDR width, height, then the chunk's CRC
  PutBigEndian32(&png, 20, 10000);
  PutBigEndian32(&png, 29, Crc32(std::string_view(png).substr(12, 17)));
  StatusOr<RgbImage> image = DecodeImage(png);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().message(),
            "PNG image too large: 10000x10000 exceeds the limit of 50000000 pixels");

  std::string jpeg = ReadFixture("images/kitten_small.jpg");
  const size_t sof = jpeg.find("\xff\xc0");
  ASSERT_NE(sof, std::string::npos);
  for (size_t at : {sof + 5, sof + 7}) {  // height, width (16 bits each)
    jpeg[at] = static_cast<char>(10000 >> 8);
    jpeg[at + 1] = static_cast<char>(10000 & 0xff);
  }
  image = DecodeImage(jpeg);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().message(),
            "JPEG image too large: 10000x10000 exceeds the limit of 50000000 pixels");
}

// ---- resize and crop --------------------------------------------------------------------

TEST(ResizeTest, ResizedSizeFollowsTorchvision) {
  auto size = [](int w, int h, int s) {
    const ImageSize r = ResizedSize(w, h, s);
    return std::pair<int, int>{r.width, r.height};
  };
  EXPECT_EQ(size(64, 48, 256), (std::pair<int, int>{341, 256}));  // 341.33 truncated
  EXPECT_EQ(size(48, 64, 256), (std::pair<int, int>{256, 341}));
  EXPECT_EQ(size(500, 375, 256), (std::pair<int, int>{341, 256}));
  EXPECT_EQ(size(640, 480, 256), (std::pair<int, int>{341, 256}));
  EXPECT_EQ(size(1024, 683, 256), (std::pair<int, int>{383, 256}));  // 383.81
  EXPECT_EQ(size(300, 300, 256), (std::pair<int, int>{256, 256}));
  EXPECT_EQ(size(3, 1000, 2), (std::pair<int, int>{2, 666}));
  EXPECT_EQ(size(64, 48, 32), (std::pair<int, int>{42, 32}));
}

TEST(ResizeTest, DownscaleEqualsPil) {
  const RgbImage png = DecodeFixture("images/kitten_small.png");
  const RgbImage expected = DecodeFixture("images/kitten_small_resize32.png");  // PIL's
  const RgbImage resized = ResizeShorterSide(png, 32);
  EXPECT_EQ(resized.width, 42);
  EXPECT_EQ(resized.height, 32);
  EXPECT_EQ(MaxAbsDifference(resized, expected), 0);
}

TEST(ResizeTest, UpscaleAndCropEqualPil) {
  const RgbImage jpeg = DecodeFixture("images/kitten_small.jpg");
  const RgbImage resized = ResizeShorterSide(jpeg, 256);
  EXPECT_EQ(resized.width, 341);
  EXPECT_EQ(resized.height, 256);
  const RgbImage cropped = CenterCrop(resized, 224, 224);
  EXPECT_EQ(cropped.width, 224);
  EXPECT_EQ(cropped.height, 224);
  EXPECT_EQ(Checksum(cropped), (std::pair<uint32_t, uint32_t>{19201219, 2419047893u}));
  const RgbImage png = DecodeFixture("images/kitten_small.png");
  EXPECT_EQ(Checksum(ResizeShorterSide(png, 256)),
            (std::pair<uint32_t, uint32_t>{31867394, 4011494671u}));
}

TEST(ResizeTest, FusedResizeAndCropEqualsTheTwoSteps) {
  const RgbImage jpeg = DecodeFixture("images/kitten_small.jpg");
  for (const auto& [size, crop_w, crop_h] :
       {std::tuple{256, 224, 224}, std::tuple{32, 30, 20}, std::tuple{48, 64, 48},
        std::tuple{20, 40, 10}, std::tuple{100, 90, 120}}) {
    SCOPED_TRACE(testing::Message() << size << " " << crop_w << "x" << crop_h);
    const RgbImage two_steps = CenterCrop(ResizeShorterSide(jpeg, size), crop_w, crop_h);
    const RgbImage fused = ResizeShorterSideAndCenterCrop(jpeg, size, crop_w, crop_h);
    EXPECT_EQ(MaxAbsDifference(fused, two_steps), 0);
  }
}

TEST(ResizeTest, SameSizeIsACopy) {
  const RgbImage image = Coordinates(30, 20);
  const RgbImage resized = ResizeShorterSide(image, 20);
  EXPECT_EQ(resized.width, 30);
  EXPECT_EQ(resized.height, 20);
  EXPECT_EQ(resized.pixels, image.pixels);
}

TEST(ResizeTest, UniformImageStaysUniform) {
  RgbImage image{37, 23, std::vector<uint8_t>(size_t{37} * 23 * 3, 0)};
  for (size_t i = 0; i < image.pixels.size(); i += 3) {
    image.pixels[i] = 200;
    image.pixels[i + 1] = 100;
    image.pixels[i + 2] = 3;
  }
  for (int size : {5, 23 * 3, 256}) {
    const RgbImage resized = ResizeShorterSide(image, size);
    for (int y = 0; y < resized.height; ++y) {
      for (int x = 0; x < resized.width; ++x) {
        ASSERT_EQ(Pixel(resized, x, y), (Rgb{200, 100, 3})) << size << " " << x << "," << y;
      }
    }
  }
}

TEST(CenterCropTest, RoundsHalfToEvenAsPython) {
  // Expected from torchvision's center_crop on the same images (pixel = (x+1, y+1, 7)).
  // 5 - 2 = 3: round(1.5) = 2; 7 - 2: round(2.5) = 2; 9 - 2: round(3.5) = 4.
  EXPECT_EQ(Pixel(CenterCrop(Coordinates(5, 5), 2, 2), 0, 0), (Rgb{3, 3, 7}));
  EXPECT_EQ(Pixel(CenterCrop(Coordinates(7, 7), 2, 2), 0, 0), (Rgb{3, 3, 7}));
  EXPECT_EQ(Pixel(CenterCrop(Coordinates(9, 9), 2, 2), 0, 0), (Rgb{5, 5, 7}));
  const RgbImage same = CenterCrop(Coordinates(4, 4), 4, 4);
  EXPECT_EQ(same.pixels, Coordinates(4, 4).pixels);
  // 341 x 256 -> 224: left = round(58.5) = 58, top = 16.
  const RgbImage crop = CenterCrop(Coordinates(341, 256), 224, 224);
  EXPECT_EQ(crop.width, 224);
  EXPECT_EQ(crop.height, 224);
  EXPECT_EQ(Pixel(crop, 0, 0), (Rgb{(58 + 1) % 256, 16 + 1, 7}));
}

TEST(CenterCropTest, PadsWithZerosAsTorchvision) {
  // 3x3 -> 6x4: one column of zeros left, two right; no row above, one below.
  const RgbImage crop = CenterCrop(Coordinates(3, 3), 6, 4);
  ASSERT_EQ(crop.width, 6);
  ASSERT_EQ(crop.height, 4);
  for (int x = 0; x < 6; ++x) {
    const int expected_r[] = {0, 1, 2, 3, 0, 0};
    EXPECT_EQ(Pixel(crop, x, 0).r, expected_r[x]) << x;
  }
  for (int y = 0; y < 4; ++y) {
    const int expected_g[] = {1, 2, 3, 0};
    EXPECT_EQ(Pixel(crop, 1, y).g, expected_g[y]) << y;
  }
  EXPECT_EQ(Pixel(crop, 0, 0), (Rgb{0, 0, 0}));
  // 8x3 -> 4x6: columns cropped from x = 2, one row of zeros above.
  const RgbImage mixed = CenterCrop(Coordinates(8, 3), 4, 6);
  EXPECT_EQ(Pixel(mixed, 0, 0), (Rgb{0, 0, 0}));
  EXPECT_EQ(Pixel(mixed, 0, 1), (Rgb{3, 1, 7}));
  EXPECT_EQ(Pixel(mixed, 3, 3), (Rgb{6, 3, 7}));
  EXPECT_EQ(Pixel(mixed, 3, 4), (Rgb{0, 0, 0}));
}

// ---- extreme aspect ratios (issue 7 #5) -------------------------------------------------

// A grayscale PNG of width x height, every pixel `value`, its IDAT a zlib stream of stored
// (uncompressed) deflate blocks: no zlib needed to write it.
std::string GrayPng(uint32_t width, uint32_t height, uint8_t value) {
  auto chunk = [](std::string* out, const char* type, const std::string& data) {
    std::string c(4, '\0');
    PutBigEndian32(&c, 0, static_cast<uint32_t>(data.size()));
    std::string body = std::string(type, 4) + data;
    c += body;
    c.resize(c.size() + 4);
    PutBigEndian32(&c, c.size() - 4, Crc32(body));
    *out += c;
  };
  std::string ihdr(13, '\0');
  PutBigEndian32(&ihdr, 0, width);
  PutBigEndian32(&ihdr, 4, height);
  ihdr[8] = 8;  // bit depth; colour type 0 (gray), deflate, filter 0, no interlace
  std::string raw;
  for (uint32_t y = 0; y < height; ++y) {
    raw.push_back('\0');  // filter: none
    raw.append(width, static_cast<char>(value));
  }
  std::string z = "\x78\x01";
  for (size_t at = 0; at < raw.size(); at += 65535) {
    const size_t n = std::min<size_t>(65535, raw.size() - at);
    z.push_back(at + n == raw.size() ? '\1' : '\0');
    z.push_back(static_cast<char>(n & 0xff));
    z.push_back(static_cast<char>(n >> 8));
    z.push_back(static_cast<char>(~n & 0xff));
    z.push_back(static_cast<char>((~n >> 8) & 0xff));
    z.append(raw, at, n);
  }
  uint32_t a = 1, b = 0;
  for (char ch : raw) {
    a = (a + static_cast<uint8_t>(ch)) % 65521;
    b = (b + a) % 65521;
  }
  z.resize(z.size() + 4);
  PutBigEndian32(&z, z.size() - 4, (b << 16) | a);
  std::string png = "\x89PNG\r\n\x1a\n";
  chunk(&png, "IHDR", ihdr);
  chunk(&png, "IDAT", z);
  chunk(&png, "IEND", "");
  return png;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// Runs `f` in a child process whose address space may grow by at most `headroom` bytes;
// true if it returned true. An allocation beyond that throws std::bad_alloc there (which,
// uncaught, aborts the child): how a test asserts that work stays bounded without timing.
bool RunsWithin(size_t headroom, const std::function<bool()>& f) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::ifstream statm("/proc/self/statm");
    size_t pages = 0;
    statm >> pages;
    const rlim_t limit = pages * static_cast<size_t>(::sysconf(_SC_PAGESIZE)) + headroom;
    const rlimit rl{limit, limit};
    ::setrlimit(RLIMIT_AS, &rl);
    _exit(f() ? 0 : 1);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(ResizeTest, ExtremeAspectRatioResizesInMemoryBoundedByTheCrop) {
  // 1 x 1,000,000 resizes to 256 x 256,000,000, of which the crop keeps 224 x 224: the work
  // must not be sized by the 256,000,000 rows (before the fix: ~5 GB of coefficients).
  const std::string png = GrayPng(1, 1'000'000, 77);
  StatusOr<RgbImage> image = DecodeImage(png);
  ASSERT_TRUE(image.ok()) << image.status().message();
  ASSERT_EQ(image->width, 1);
  ASSERT_EQ(image->height, 1'000'000);
  const ImageSize resized = ResizedSize(1, 1'000'000, 256);
  EXPECT_EQ(resized.width, 256);
  EXPECT_EQ(resized.height, 256'000'000);
  // The same for the wide case (a JPEG may be 65,500 x 1).
  const RgbImage wide{65'500, 1, std::vector<uint8_t>(size_t{65'500} * 3, 77)};
  if (kSanitized) GTEST_SKIP() << "RLIMIT_AS cannot bound a sanitized process";
  const RgbImage& tall = *image;
  for (const RgbImage* input : {&tall, &wide}) {
    SCOPED_TRACE(input->width);
    EXPECT_TRUE(RunsWithin(size_t{64} << 20, [&] {
      const RgbImage crop = ResizeShorterSideAndCenterCrop(*input, 256, 224, 224);
      return crop.width == 224 && crop.height == 224 &&
             std::all_of(crop.pixels.begin(), crop.pixels.end(), [](uint8_t p) { return p == 77; });
    }));
  }
}

// ---- decoding row by row into the resize (issue 7: extra memory per request) ----------

// The pixel (x, y) of channel c of the synthetic images: smooth ramps with edges every 8
// pixels, so that they compress well yet every output pixel of a resize tells.
uint8_t Pattern(int x, int y, int c) {
  return static_cast<uint8_t>((x * (c + 1) / 16 + y * (3 - c) / 16 + ((x ^ y) & 8) * 4 * c) & 255);
}

// A PNG written by libpng from Pattern: colour type PNG_COLOR_TYPE_GRAY (channel 0),
// _GRAY_ALPHA, _RGB or _RGB_ALPHA (alpha = x & 255), 8 or 16 bits (the low byte 0x5a),
// Adam7-interlaced or not.
std::string EncodePng(int width, int height, int color_type, int bit_depth, bool interlaced) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, size_t n) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<char*>(data), n);
      },
      [](png_structp) {});
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height),
               bit_depth, color_type, interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 6);
  png_write_info(png, info);
  const int passes = png_set_interlace_handling(png);
  const int channels = png_get_channels(png, info);
  const int bytes = bit_depth / 8;
  std::vector<uint8_t> row(static_cast<size_t>(width) * channels * bytes);
  for (int pass = 0; pass < passes; ++pass) {
    for (int y = 0; y < height; ++y) {
      uint8_t* p = row.data();
      for (int x = 0; x < width; ++x) {
        for (int c = 0; c < channels; ++c) {
          const bool alpha = (channels == 2 && c == 1) || c == 3;
          *p++ = alpha ? static_cast<uint8_t>(x) : Pattern(x, y, c);
          if (bytes == 2) *p++ = 0x5a;
        }
      }
      png_write_row(png, row.data());
    }
  }
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return out;
}

// A JPEG written by libjpeg from Pattern (RGB), quality 90, chroma subsampled 2x2 (4:2:0)
// or not (4:4:4), progressive or baseline.
std::string EncodeJpeg(int width, int height, bool subsampled, bool progressive) {
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr error{};
  cinfo.err = jpeg_std_error(&error);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 90, TRUE);
  const int factor = subsampled ? 2 : 1;
  cinfo.comp_info[0].h_samp_factor = factor;
  cinfo.comp_info[0].v_samp_factor = factor;
  if (progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<uint8_t> row(static_cast<size_t>(width) * 3);
  while (cinfo.next_scanline < cinfo.image_height) {
    const int y = static_cast<int>(cinfo.next_scanline);
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < 3; ++c) row[static_cast<size_t>(x) * 3 + c] = Pattern(x, y, c);
    }
    JSAMPROW p = row.data();
    jpeg_write_scanlines(&cinfo, &p, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buffer), size);
  std::free(buffer);
  return out;
}

// DecodeImage then ResizeShorterSideAndCenterCrop: the whole-image path, PIL's equal.
RgbImage WholeImagePath(std::string_view bytes, int size, int crop_w, int crop_h) {
  StatusOr<RgbImage> image = DecodeImage(bytes);
  EXPECT_TRUE(image.ok()) << image.status().message();
  if (!image.ok()) return {};
  return ResizeShorterSideAndCenterCrop(*image, size, crop_w, crop_h);
}

RgbImage Streamed(std::string_view bytes, int size, int crop_w, int crop_h) {
  StatusOr<RgbImage> crop = DecodeResizeAndCenterCrop(bytes, size, crop_w, crop_h);
  EXPECT_TRUE(crop.ok()) << crop.status().message();
  return crop.ok() ? std::move(crop).value() : RgbImage{};
}

// Resize, crop sizes: ImageNet's, downscales and upscales, crops larger than the image
// (padding) and a crop of a single pixel.
constexpr std::tuple<int, int, int> kStreamingCases[] = {
    {256, 224, 224}, {32, 30, 20}, {48, 64, 48}, {20, 40, 10},
    {100, 90, 120},  {5, 3, 3},    {7, 1, 1},    {300, 224, 224},
};

TEST(StreamingTest, DecodeResizeAndCenterCropEqualsTheWholeImagePathOnTheFixtures) {
  for (const char* name :
       {"kitten_small.jpg", "kitten_small.png", "kitten_small_resize32.png", "modes/gray8.png",
        "modes/gray1.png", "modes/gray4.png", "modes/gray_alpha.png", "modes/rgba.png",
        "modes/palette.png", "modes/palette4_trns.png", "modes/interlaced.png", "modes/rgb16.png",
        "modes/gray16.png", "modes/gray.jpg", "modes/cmyk.jpg"}) {
    const std::string bytes = ReadFixture(std::string("images/") + name);
    for (const auto& [size, crop_w, crop_h] : kStreamingCases) {
      SCOPED_TRACE(testing::Message() << name << " " << size << " " << crop_w << "x" << crop_h);
      const RgbImage whole = WholeImagePath(bytes, size, crop_w, crop_h);
      const RgbImage streamed = Streamed(bytes, size, crop_w, crop_h);
      ASSERT_EQ(streamed.width, crop_w);
      ASSERT_EQ(streamed.height, crop_h);
      EXPECT_EQ(streamed.pixels, whole.pixels);
    }
  }
  // The tensor the image classifier builds (ImageNetPipeline's constants), bit for bit.
  const std::string jpeg = ReadFixture("images/kitten_small.jpg");
  const RgbImage streamed = Streamed(jpeg, 256, 224, 224);
  const std::vector<float> t = ToNormalizedChw(streamed, kImageNetMean, kImageNetStd);
  auto at = [&](int c, int y, int x) { return t[(static_cast<size_t>(c) * 224 + y) * 224 + x]; };
  EXPECT_EQ(at(0, 0, 0), -1.3986643552780151f);
  EXPECT_EQ(at(1, 100, 50), -0.10994395613670349f);
  EXPECT_EQ(at(2, 223, 223), 0.4439217746257782f);
  EXPECT_EQ(at(0, 112, 150), 2.1804091930389404f);
}

TEST(StreamingTest, DecodeResizeAndCenterCropEqualsTheWholeImagePathOnSyntheticImages) {
  const std::pair<const char*, std::string> images[] = {
      {"rgb 1203x917", EncodePng(1203, 917, PNG_COLOR_TYPE_RGB, 8, false)},
      {"rgba16 917x1203", EncodePng(917, 1203, PNG_COLOR_TYPE_RGB_ALPHA, 16, false)},
      {"gray 3001x41", EncodePng(3001, 41, PNG_COLOR_TYPE_GRAY, 8, false)},
      {"gray_alpha interlaced 611x777", EncodePng(611, 777, PNG_COLOR_TYPE_GRAY_ALPHA, 8, true)},
      {"rgb interlaced 1000x999", EncodePng(1000, 999, PNG_COLOR_TYPE_RGB, 8, true)},
      {"jpeg 4:2:0 1999x1001", EncodeJpeg(1999, 1001, true, false)},
      {"jpeg 4:4:4 777x1555", EncodeJpeg(777, 1555, false, false)},
      {"progressive jpeg 4:2:0 1280x960", EncodeJpeg(1280, 960, true, true)},
      {"progressive jpeg 4:4:4 333x2222", EncodeJpeg(333, 2222, false, true)},
  };
  for (const auto& [name, bytes] : images) {
    for (const auto& [size, crop_w, crop_h] : kStreamingCases) {
      SCOPED_TRACE(testing::Message() << name << " " << size << " " << crop_w << "x" << crop_h);
      const RgbImage streamed = Streamed(bytes, size, crop_w, crop_h);
      EXPECT_EQ(streamed.pixels, WholeImagePath(bytes, size, crop_w, crop_h).pixels);
    }
  }
}

TEST(StreamingTest, AnImageNearThePixelCapIsPreprocessedInBoundedMemory) {
  // 7,000 x 7,000 (49 megapixels) compresses to a few megabytes but is 147 MB of RGB: it
  // must be decoded row by row into the resize, keeping only the rows the crop needs.
  const std::string png = EncodePng(7000, 7000, PNG_COLOR_TYPE_RGB, 8, false);
  EXPECT_LT(png.size(), size_t{6'500'000});
  const RgbImage expected = WholeImagePath(png, 256, 224, 224);
  ASSERT_EQ(expected.pixels.size(), size_t{224} * 224 * 3);
  // A row of 1,000,000 RGBA16 pixels (the widest PNG accepted): 8 MB in libpng's buffers.
  const std::string wide = EncodePng(1'000'000, 2, PNG_COLOR_TYPE_RGB_ALPHA, 16, false);
  const RgbImage expected_wide = WholeImagePath(wide, 256, 224, 224);
  if (kSanitized) GTEST_SKIP() << "RLIMIT_AS cannot bound a sanitized process";
  EXPECT_TRUE(RunsWithin(size_t{64} << 20, [&] {
    StatusOr<RgbImage> crop = DecodeResizeAndCenterCrop(png, 256, 224, 224);
    return crop.ok() && crop->pixels == expected.pixels;
  }));
  EXPECT_TRUE(RunsWithin(size_t{64} << 20, [&] {
    StatusOr<RgbImage> crop = DecodeResizeAndCenterCrop(wide, 256, 224, 224);
    return crop.ok() && crop->pixels == expected_wide.pixels;
  }));
}

// The image with its IHDR (PNG) or SOF (JPEG) declaring width x height instead.
std::string WithDeclaredSize(std::string bytes, uint32_t width, uint32_t height) {
  if (bytes.rfind("\x89PNG", 0) == 0) {
    PutBigEndian32(&bytes, 16, width);
    PutBigEndian32(&bytes, 20, height);
    PutBigEndian32(&bytes, 29, Crc32(std::string_view(bytes).substr(12, 17)));
    return bytes;
  }
  size_t sof = bytes.find("\xff\xc0");
  if (sof == std::string::npos) sof = bytes.find("\xff\xc2");
  EXPECT_NE(sof, std::string::npos);
  bytes[sof + 5] = static_cast<char>(height >> 8);
  bytes[sof + 6] = static_cast<char>(height & 0xff);
  bytes[sof + 7] = static_cast<char>(width >> 8);
  bytes[sof + 8] = static_cast<char>(width & 0xff);
  return bytes;
}

TEST(StreamingTest, ImagesThatCannotBeDecodedRowByRowAreCappedByTheirMemory) {
  // An Adam7 PNG is decoded whole (3 bytes a pixel); a progressive JPEG keeps every DCT
  // coefficient (128 bytes a block of 8 x 8 samples of one component). The sizes are
  // declared in the headers, refused before any pixel data is read.
  const std::string interlaced = EncodePng(40, 30, PNG_COLOR_TYPE_RGB, 8, true);
  const std::string progressive_444 = EncodeJpeg(40, 30, false, true);
  const std::string progressive_420 = EncodeJpeg(40, 30, true, true);
  const std::pair<std::string, std::string> refused[] = {
      {WithDeclaredSize(interlaced, 4000, 4000),
       "interlaced PNG image too large: 4000x4000 is decoded whole into 48000000 bytes, more "
       "than the limit of 40000000 (a PNG that is not interlaced may have up to 50000000 "
       "pixels)"},
      {WithDeclaredSize(progressive_444, 3000, 3000),
       "progressive JPEG image too large: 3000x3000 keeps 54000000 bytes of DCT coefficients, "
       "more than the limit of 40000000 (a baseline JPEG may have up to 50000000 pixels)"},
      {WithDeclaredSize(progressive_420, 4000, 4000),
       "progressive JPEG image too large: 4000x4000 keeps 48000000 bytes of DCT coefficients, "
       "more than the limit of 40000000 (a baseline JPEG may have up to 50000000 pixels)"},
  };
  for (const auto& [bytes, message] : refused) {
    for (bool streamed : {false, true}) {
      SCOPED_TRACE(message);
      const Status status = streamed ? DecodeResizeAndCenterCrop(bytes, 256, 224, 224).status()
                                     : DecodeImage(bytes).status();
      EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
      EXPECT_EQ(status.message(), message);
    }
  }
  // Under the limit (27 MB) the decoder starts: libpng finds the pixel data too short,
  // libjpeg pads the missing coefficients, as PIL's libjpeg does.
  EXPECT_EQ(DecodeResizeAndCenterCrop(WithDeclaredSize(interlaced, 3000, 3000), 256, 224, 224)
                .status()
                .message(),
            "invalid PNG image: Not enough image data");
  EXPECT_TRUE(
      DecodeResizeAndCenterCrop(WithDeclaredSize(progressive_420, 3000, 3000), 256, 224, 224).ok());
}

TEST(StreamingTest, APngSideLongerThanAMillionPixelsIsRefused) {
  // A row is decoded whole: its length is bounded (a JPEG's by the format, 65,500).
  const std::string png = ReadFixture("images/kitten_small.png");
  for (const auto& [width, height] :
       {std::pair<uint32_t, uint32_t>{1'000'001, 1}, std::pair<uint32_t, uint32_t>{1, 1'000'001}}) {
    const Status status =
        DecodeResizeAndCenterCrop(WithDeclaredSize(png, width, height), 256, 224, 224).status();
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(status.message(), "PNG image too large: " + std::to_string(width) + "x" +
                                    std::to_string(height) +
                                    " exceeds the limit of 1000000 pixels a side");
  }
}

// ---- normalization ----------------------------------------------------------------------

TEST(NormalizeTest, KnownPixelsMatchTorchvision) {
  // Normalize(ToTensor(p)) for p = 0, 128, 255 in every channel, from torchvision.
  RgbImage image{3, 1, {0, 0, 0, 128, 128, 128, 255, 255, 255}};
  const std::vector<float> chw = ToNormalizedChw(image, kImageNetMean, kImageNetStd);
  ASSERT_EQ(chw.size(), 9u);
  const float expected[3][3] = {
      {-2.1179039478302f, -2.0357141494750977f, -1.804444432258606f},
      {0.07406462728977203f, 0.20518219470977783f, 0.4264925718307495f},
      {2.248908281326294f, 2.4285714626312256f, 2.640000104904175f},
  };
  for (int x = 0; x < 3; ++x) {
    for (int c = 0; c < 3; ++c) {
      EXPECT_FLOAT_EQ(chw[static_cast<size_t>(c * 3 + x)], expected[x][c]) << x << " " << c;
    }
  }
}

TEST(NormalizeTest, LayoutIsChannelMajor) {
  RgbImage image{2, 1, {10, 20, 30, 40, 50, 60}};
  const std::vector<float> chw = ToNormalizedChw(image, {0, 0, 0}, {1, 1, 1});
  const float expected[] = {10, 40, 20, 50, 30, 60};
  for (size_t i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(chw[i], expected[i] / 255.0f) << i;
}

TEST(NormalizeTest, ImageClassifierPipelineMatchesTorchvision) {
  // Resize(256), CenterCrop(224), ToTensor, Normalize on the JPEG, sampled [c][y][x].
  const RgbImage jpeg = DecodeFixture("images/kitten_small.jpg");
  const RgbImage crop = ResizeShorterSideAndCenterCrop(jpeg, 256, 224, 224);
  const std::vector<float> t = ToNormalizedChw(crop, kImageNetMean, kImageNetStd);
  ASSERT_EQ(t.size(), 3u * 224 * 224);
  auto at = [&](int c, int y, int x) { return t[(static_cast<size_t>(c) * 224 + y) * 224 + x]; };
  EXPECT_FLOAT_EQ(at(0, 0, 0), -1.3986643552780151f);
  EXPECT_FLOAT_EQ(at(1, 100, 50), -0.10994395613670349f);
  EXPECT_FLOAT_EQ(at(2, 223, 223), 0.4439217746257782f);
  EXPECT_FLOAT_EQ(at(0, 112, 150), 2.1804091930389404f);
}

}  // namespace
}  // namespace tserve::backend
