#pragma once

// Image decoding and the torchvision preprocessing steps the image handlers need, without
// LibTorch: decode (JPEG through libjpeg, PNG through libpng), resize the shorter side
// (PIL's antialiased bilinear filter, as torchvision's Resize does on PIL images), centre
// crop (torchvision's rounding and zero padding), and ToTensor + Normalize into a float CHW
// buffer. Every function here is pure and thread safe.

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tserve::backend {

// An 8-bit RGB image, row major, 3 bytes per pixel, no padding between rows:
// pixel (x, y) channel c is pixels[(y * width + x) * 3 + c].
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// The limits every decoder checks once it has read an image's header, before it allocates
// anything sized by the image (a decompression-bomb guard: a few hundred bytes of JPEG or
// PNG can declare gigapixels). Errors are InvalidArgument naming the size and the limit.
//
// The most pixels an image may have.
inline constexpr int64_t kMaxImagePixels = 50'000'000;
// The longest side (width or height) an image may have: the decoders hold whole rows, so
// this bounds their row buffers (a PNG row of 1,000,000 RGBA16 pixels is 8 MB in libpng;
// a JPEG's sides are at most 65,500 by the format). libpng's default limit.
inline constexpr int64_t kMaxImageSide = 1'000'000;
// The most memory a decoder may hold for an image it cannot decode row by row: an Adam7
// interlaced PNG is decoded whole (3 bytes a pixel: about 13 megapixels), a progressive or
// other multi-scan JPEG keeps all its DCT coefficients (libjpeg's whole-image coefficient
// buffer, 2 bytes a sample after chroma subsampling: 3 bytes a pixel at 4:2:0, about 13
// megapixels; 6 at 4:4:4, about 6.6 megapixels). Other images stream: see
// DecodeResizeAndCenterCrop.
inline constexpr int64_t kMaxBufferedImageBytes = 40'000'000;

// Decodes a JPEG or PNG image into RGB8, as PIL's Image.open(...).convert("RGB") does:
// grayscale is replicated, a palette is expanded, alpha is dropped (not composited),
// 16-bit samples keep their high byte, CMYK/YCCK JPEGs are converted. JPEG pixels are the
// same as PIL's (both use libjpeg's default islow DCT and fancy upsampling).
// Errors (InvalidArgument): neither format (the message shows the first bytes), an image
// beyond the limits above, a truncated or corrupt file (libjpeg/libpng's message).
// libjpeg/libpng errors never abort the process. Holds the whole image (3 bytes a pixel):
// the image handler uses DecodeResizeAndCenterCrop instead.
StatusOr<RgbImage> DecodeImage(std::string_view bytes);
// The same with a lower pixel limit for callers that hold the whole image (at most
// min(max_pixels, kMaxImagePixels)): a larger image is InvalidArgument, refused from its
// header before any pixel is decoded.
StatusOr<RgbImage> DecodeImage(std::string_view bytes, int64_t max_pixels);

// The size torchvision's Resize(size) gives an image of width x height: the shorter side
// becomes `size`, the longer int(size * long / short) (truncated, as Python's int()).
struct ImageSize {
  int width = 0;
  int height = 0;
};
ImageSize ResizedSize(int width, int height, int size);

// torchvision's transforms.Resize(size) on a PIL image: the shorter side becomes `size`
// (see ResizedSize) with PIL's bilinear filter, antialiased when shrinking (the filter
// support scales with the reduction), two passes with 8-bit rounding in between.
// Reproduces Pillow 9.4's fixed-point arithmetic: equal to PIL pixel for pixel.
// An image already of that size is returned unchanged. Requires size > 0 and a non-empty
// image; the caller bounds the output size (ResizedSize) for extreme aspect ratios.
RgbImage ResizeShorterSide(const RgbImage& image, int size);

// torchvision's transforms.CenterCrop((height, width)): the window's top-left corner is
// round((H - h) / 2), round((W - w) / 2) with Python's round-half-to-even; a side smaller
// than the crop is first padded with zeros ((d // 2) before, the rest after).
RgbImage CenterCrop(const RgbImage& image, int width, int height);

// ResizeShorterSide(image, size) followed by CenterCrop(crop_width, crop_height), computing
// only the pixels the crop keeps: the same result, less work, and no huge intermediate
// image for extreme aspect ratios (the output is always crop_width x crop_height). Memory
// and time are bounded by the crop and the input, never by the resized size (a 1 x 1,000,000
// image resizes to 256 x 256,000,000 of which only the crop's rows are computed).
RgbImage ResizeShorterSideAndCenterCrop(const RgbImage& image, int size, int crop_width,
                                        int crop_height);

// DecodeImage(bytes) then ResizeShorterSideAndCenterCrop(size, crop_width, crop_height),
// the same result bit for bit and the same errors, without ever holding the decoded image:
// each row goes from the decoder straight into the resize's horizontal pass, which keeps
// only the rows the crop's vertical filter needs. Memory beyond `bytes` is bounded whatever
// the input: crop_width x (source rows under the crop, at most about
// crop_height / size x the shorter side + the filter's support) x 3 bytes (about 4.6 MB
// for 224 / 256 of a 7,071 x 7,071 image), a decoded row and the decoder's own row buffers
// (at most a few MB, kMaxImageSide), and for interlaced PNGs and progressive JPEGs at most
// kMaxBufferedImageBytes more. Requires size, crop_width, crop_height > 0.
StatusOr<RgbImage> DecodeResizeAndCenterCrop(std::string_view bytes, int size, int crop_width,
                                             int crop_height);

// ImageNet statistics, as TorchServe's image_classifier and torchvision use.
inline constexpr std::array<float, 3> kImageNetMean = {0.485f, 0.456f, 0.406f};
inline constexpr std::array<float, 3> kImageNetStd = {0.229f, 0.224f, 0.225f};

// transforms.ToTensor() then transforms.Normalize(mean, std): channel-major (3 x H x W)
// floats, (p / 255 - mean[c]) / std[c] computed in float as torch does.
std::vector<float> ToNormalizedChw(const RgbImage& image, const std::array<float, 3>& mean,
                                   const std::array<float, 3>& std);
// The same into caller-provided storage of 3 * width * height floats (e.g. a tensor's
// slice of a batch).
void ToNormalizedChw(const RgbImage& image, const std::array<float, 3>& mean,
                     const std::array<float, 3>& std, float* out);

}  // namespace tserve::backend
