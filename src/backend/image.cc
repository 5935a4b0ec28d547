#include "backend/image.h"

// jpeglib.h needs FILE and size_t declared first.
#include <cstddef>
#include <cstdio>

#include <jpeglib.h>
// After jpeglib.h: defines the J_MESSAGE_CODE enum (JWRN_JPEG_EOF).
#include <jerror.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <limits>
#include <new>
#include <string>

namespace tserve::backend {

namespace {

std::string HexPrefix(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  const size_t n = std::min<size_t>(bytes.size(), 8);
  for (size_t i = 0; i < n; ++i) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    if (i > 0) out.push_back(' ');
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xf]);
  }
  if (bytes.size() > n) out.append(" ...");
  return out;
}

Status TooLarge(const char* format, int64_t width, int64_t height) {
  return Status::InvalidArgument(std::string(format) +
                                 " image too large: " + std::to_string(width) + "x" +
                                 std::to_string(height) + " exceeds the limit of " +
                                 std::to_string(kMaxImagePixels) + " pixels");
}

// ---- JPEG -------------------------------------------------------------------------------
//
// libjpeg reports errors by calling error_exit, which must not return; the default calls
// exit(). Ours longjmps back to the setjmp in the function that made the libjpeg call. To
// keep that jump well defined in C++, the functions that call setjmp have no locals with
// destructors and no locals modified after setjmp that are read after the jump: all state
// lives in a JpegState owned by the caller, whose destructor releases libjpeg's memory.

struct JpegErrorManager {
  jpeg_error_mgr mgr;  // first: libjpeg hands back a jpeg_error_mgr*
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

struct JpegState {
  jpeg_decompress_struct cinfo{};
  JpegErrorManager error{};
  bool created = false;

  JpegState() = default;
  JpegState(const JpegState&) = delete;
  JpegState& operator=(const JpegState&) = delete;
  ~JpegState() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

[[noreturn]] void JpegErrorExit(j_common_ptr cinfo) {
  auto* error = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, error->message);
  std::longjmp(error->jump, 1);
}

void JpegEmitMessage(j_common_ptr cinfo, int msg_level) {
  // A truncated file is only a warning to libjpeg, which pads the image with gray; PIL
  // refuses such a file ("image file is truncated") and so do we. Other warnings (e.g.
  // extraneous bytes before a marker) are tolerated, as PIL tolerates them.
  if (msg_level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) JpegErrorExit(cinfo);
}

bool JpegReadHeader(JpegState* state, const unsigned char* data, unsigned long size) {
  if (setjmp(state->error.jump) != 0) return false;
  jpeg_create_decompress(&state->cinfo);
  state->created = true;
  jpeg_mem_src(&state->cinfo, data, size);
  jpeg_read_header(&state->cinfo, TRUE);
  switch (state->cinfo.jpeg_color_space) {
    case JCS_CMYK:
    case JCS_YCCK:
      state->cinfo.out_color_space = JCS_CMYK;
      break;
    default:  // grayscale, YCbCr, RGB: libjpeg converts to RGB
      state->cinfo.out_color_space = JCS_RGB;
      break;
  }
  return true;
}

// PIL's CMYK -> RGB (Convert.c cmyk2rgb) on Adobe-inverted samples, which is how PIL reads
// CMYK JPEGs (raw mode "CMYK;I").
void CmykRowToRgb(const uint8_t* in, int width, uint8_t* out) {
  for (int x = 0; x < width; ++x, in += 4, out += 3) {
    const int nk = in[3];  // 255 - k, k = 255 - in[3]
    for (int c = 0; c < 3; ++c) {
      const int v = 255 - in[c];
      const int tmp = v * nk + 128;
      const int r = nk - (((tmp >> 8) + tmp) >> 8);
      out[c] = static_cast<uint8_t>(std::clamp(r, 0, 255));
    }
  }
}

// Decodes into `pixels` (width * height * 3 bytes); `cmyk_row` holds width * 4 bytes.
bool JpegDecodeRows(JpegState* state, uint8_t* pixels, uint8_t* cmyk_row) {
  if (setjmp(state->error.jump) != 0) return false;
  jpeg_decompress_struct* cinfo = &state->cinfo;
  jpeg_start_decompress(cinfo);
  const bool cmyk = cinfo->out_color_space == JCS_CMYK;
  const size_t stride = static_cast<size_t>(cinfo->output_width) * 3;
  while (cinfo->output_scanline < cinfo->output_height) {
    uint8_t* dest = pixels + stride * cinfo->output_scanline;
    JSAMPROW row = cmyk ? cmyk_row : dest;
    if (jpeg_read_scanlines(cinfo, &row, 1) != 1) {
      std::snprintf(state->error.message, sizeof(state->error.message), "no scanline decoded");
      return false;
    }
    if (cmyk) CmykRowToRgb(cmyk_row, static_cast<int>(cinfo->output_width), dest);
  }
  jpeg_finish_decompress(cinfo);
  return true;
}

StatusOr<RgbImage> DecodeJpeg(std::string_view bytes) {
  JpegState state;
  state.cinfo.err = jpeg_std_error(&state.error.mgr);
  state.error.mgr.error_exit = JpegErrorExit;
  state.error.mgr.emit_message = JpegEmitMessage;
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  if (!JpegReadHeader(&state, data, static_cast<unsigned long>(bytes.size()))) {
    return Status::InvalidArgument(std::string("invalid JPEG image: ") + state.error.message);
  }
  const int64_t width = state.cinfo.image_width;
  const int64_t height = state.cinfo.image_height;
  if (width * height > kMaxImagePixels) return TooLarge("JPEG", width, height);

  RgbImage image;
  std::vector<uint8_t> cmyk_row;
  try {
    image.width = static_cast<int>(width);
    image.height = static_cast<int>(height);
    image.pixels.resize(static_cast<size_t>(width * height * 3));
    if (state.cinfo.out_color_space == JCS_CMYK) cmyk_row.resize(static_cast<size_t>(width) * 4);
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted("out of memory decoding a JPEG image");
  }
  if (!JpegDecodeRows(&state, image.pixels.data(), cmyk_row.data())) {
    return Status::InvalidArgument(std::string("invalid JPEG image: ") + state.error.message);
  }
  if (static_cast<int64_t>(state.cinfo.output_width) != width ||
      static_cast<int64_t>(state.cinfo.output_height) != height) {
    return Status::Internal("JPEG decoder changed the image size");
  }
  return image;
}

// ---- PNG --------------------------------------------------------------------------------
//
// The same discipline as for JPEG: libpng longjmps to png_jmpbuf on errors.

struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::string_view data;
  size_t position = 0;
  char message[256] = {};

  PngState() = default;
  PngState(const PngState&) = delete;
  PngState& operator=(const PngState&) = delete;
  ~PngState() {
    if (png != nullptr) png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr);
  }
};

[[noreturn]] void PngError(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(state->message, sizeof(state->message), "%s", message);
  png_longjmp(png, 1);
}

void PngWarning(png_structp /*png*/, png_const_charp /*message*/) {}

void PngRead(png_structp png, png_bytep out, size_t length) {
  auto* state = static_cast<PngState*>(png_get_io_ptr(png));
  if (state->data.size() - state->position < length) png_error(png, "truncated PNG data");
  std::memcpy(out, state->data.data() + state->position, length);
  state->position += length;
}

// Reads the header and sets the transformations to RGB8 (PIL's convert("RGB")).
bool PngReadHeader(PngState* state) {
  if (setjmp(png_jmpbuf(state->png)) != 0) return false;
  png_structp png = state->png;
  png_infop info = state->info;
  png_set_read_fn(png, state, PngRead);
  png_read_info(png, info);
  const int color_type = png_get_color_type(png, info);
  const int bit_depth = png_get_bit_depth(png, info);
  // palette_to_rgb also turns tRNS into alpha, stripped below: PIL's convert("RGB") drops
  // transparency rather than compositing it.
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (bit_depth == 16) png_set_strip_16(png);  // the high byte, as PIL's "RGB;16B"
  png_set_strip_alpha(png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) {
    png_set_gray_to_rgb(png);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  return true;
}

bool PngReadRows(PngState* state, png_bytepp rows) {
  if (setjmp(png_jmpbuf(state->png)) != 0) return false;
  png_read_image(state->png, rows);
  return true;
}

StatusOr<RgbImage> DecodePng(std::string_view bytes) {
  PngState state;
  state.data = bytes;
  state.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, PngError, PngWarning);
  if (state.png == nullptr) return Status::ResourceExhausted("cannot create a PNG decoder");
  state.info = png_create_info_struct(state.png);
  if (state.info == nullptr) return Status::ResourceExhausted("cannot create a PNG decoder");
  if (!PngReadHeader(&state)) {
    return Status::InvalidArgument(std::string("invalid PNG image: ") + state.message);
  }
  const int64_t width = png_get_image_width(state.png, state.info);
  const int64_t height = png_get_image_height(state.png, state.info);
  if (width * height > kMaxImagePixels) return TooLarge("PNG", width, height);
  if (png_get_channels(state.png, state.info) != 3 ||
      png_get_bit_depth(state.png, state.info) != 8 ||
      png_get_rowbytes(state.png, state.info) != static_cast<size_t>(width) * 3) {
    return Status::InvalidArgument("unsupported PNG pixel layout");
  }

  RgbImage image;
  std::vector<png_bytep> rows;
  try {
    image.width = static_cast<int>(width);
    image.height = static_cast<int>(height);
    image.pixels.resize(static_cast<size_t>(width * height * 3));
    rows.resize(static_cast<size_t>(height));
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted("out of memory decoding a PNG image");
  }
  for (int64_t y = 0; y < height; ++y) {
    rows[static_cast<size_t>(y)] = image.pixels.data() + static_cast<size_t>(y * width * 3);
  }
  if (!PngReadRows(&state, rows.data())) {
    return Status::InvalidArgument(std::string("invalid PNG image: ") + state.message);
  }
  return image;
}

// ---- Resampling -------------------------------------------------------------------------
//
// A transcription of Pillow 9.4's Resample.c for 8-bit images with the bilinear filter
// (support 1): coefficients computed in double, normalized, converted to fixed point with
// 22 fractional bits, horizontal pass first, each pass rounding to 8 bits. Reproducing
// that arithmetic exactly is what makes the output equal PIL's.

constexpr int kPrecisionBits = 32 - 8 - 2;

double BilinearFilter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

uint8_t Clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

// For the output indices [first, last) of a resize from in_size to out_size: the first
// input index, the number of inputs, and `ksize` fixed-point weights of each. Only the
// outputs a crop keeps are computed: the memory and time are bounded by the crop and the
// filter's support, never by the resized size (an image of 1 x 1,000,000 pixels resizes to
// 256 x 256,000,000, of which the crop keeps 224 rows). Entry i is output first + i.
struct Coefficients {
  int first = 0;
  int ksize = 0;
  std::vector<int> bounds;  // 2 per output: first input, count
  std::vector<int32_t> weights;

  int Min(int xx) const { return bounds[static_cast<size_t>(xx - first) * 2]; }
  int Count(int xx) const { return bounds[static_cast<size_t>(xx - first) * 2 + 1]; }
  const int32_t* Weights(int xx) const {
    return &weights[static_cast<size_t>(xx - first) * static_cast<size_t>(ksize)];
  }
};

Coefficients PrecomputeCoefficients(int in_size, int out_size, int first, int last) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;
  Coefficients c;
  c.first = first;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  const auto n = static_cast<size_t>(last - first);
  c.bounds.resize(n * 2);
  c.weights.assign(n * static_cast<size_t>(c.ksize), 0);
  std::vector<double> k(static_cast<size_t>(c.ksize));
  for (int xx = first; xx < last; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filter_scale;
    // Pillow's rounding (truncation toward zero after + 0.5), kept for identical bounds.
    int xmin = static_cast<int>(center - support + 0.5);  // NOLINT(bugprone-incorrect-roundings)
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);  // NOLINT(bugprone-incorrect-roundings)
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = BilinearFilter((x + xmin - center + 0.5) * ss);
      k[static_cast<size_t>(x)] = w;
      ww += w;
    }
    const auto i = static_cast<size_t>(xx - first);
    int32_t* out = &c.weights[i * static_cast<size_t>(c.ksize)];
    for (int x = 0; x < xmax; ++x) {
      double v = k[static_cast<size_t>(x)];
      if (ww != 0.0) v /= ww;
      out[x] = static_cast<int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits)
                                          : 0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[i * 2] = xmin;
    c.bounds[i * 2 + 1] = xmax;
  }
  return c;
}

// The window [x0, x0 + w) x [y0, y0 + h) of `image` resized to out_w x out_h; pixels of
// the window outside the resized image are 0 (CenterCrop's padding).
RgbImage ResampleWindow(const RgbImage& image, int out_w, int out_h, int x0, int y0, int w, int h) {
  RgbImage result;
  result.width = w;
  result.height = h;
  result.pixels.assign(static_cast<size_t>(w) * h * 3, 0);
  // The part of the window inside the resized image.
  const int cx0 = std::max(x0, 0);
  const int cx1 = std::min(x0 + w, out_w);
  const int cy0 = std::max(y0, 0);
  const int cy1 = std::min(y0 + h, out_h);
  if (cx0 >= cx1 || cy0 >= cy1) return result;

  const bool need_horizontal = out_w != image.width;
  const bool need_vertical = out_h != image.height;
  Coefficients vertical;
  int src_first = cy0;  // input rows the vertical pass reads: [src_first, src_last)
  int src_last = cy1;
  if (need_vertical) {
    vertical = PrecomputeCoefficients(image.height, out_h, cy0, cy1);
    src_first = vertical.Min(cy0);
    src_last = vertical.Min(cy1 - 1) + vertical.Count(cy1 - 1);
  }

  // Horizontal pass: input rows [src_first, src_last), output columns [cx0, cx1).
  const int tw = cx1 - cx0;
  const int th = src_last - src_first;
  std::vector<uint8_t> temp(static_cast<size_t>(tw) * th * 3);
  if (need_horizontal) {
    const Coefficients horizontal = PrecomputeCoefficients(image.width, out_w, cx0, cx1);
    for (int y = 0; y < th; ++y) {
      const uint8_t* in_row = &image.pixels[static_cast<size_t>(y + src_first) * image.width * 3];
      uint8_t* out = &temp[static_cast<size_t>(y) * tw * 3];
      for (int xx = cx0; xx < cx1; ++xx, out += 3) {
        const int xmin = horizontal.Min(xx);
        const int count = horizontal.Count(xx);
        const int32_t* k = horizontal.Weights(xx);
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        const uint8_t* in = in_row + static_cast<size_t>(xmin) * 3;
        for (int x = 0; x < count; ++x, in += 3) {
          s0 += in[0] * k[x];
          s1 += in[1] * k[x];
          s2 += in[2] * k[x];
        }
        out[0] = Clip8(s0);
        out[1] = Clip8(s1);
        out[2] = Clip8(s2);
      }
    }
  } else {
    for (int y = 0; y < th; ++y) {
      std::memcpy(&temp[static_cast<size_t>(y) * tw * 3],
                  &image.pixels[(static_cast<size_t>(y + src_first) * image.width + cx0) * 3],
                  static_cast<size_t>(tw) * 3);
    }
  }

  // Vertical pass: output rows [cy0, cy1), written at the window's coordinates.
  const size_t temp_stride = static_cast<size_t>(tw) * 3;
  for (int yy = cy0; yy < cy1; ++yy) {
    uint8_t* out = &result.pixels[(static_cast<size_t>(yy - y0) * w + (cx0 - x0)) * 3];
    if (!need_vertical) {
      std::memcpy(out, &temp[static_cast<size_t>(yy - src_first) * temp_stride], temp_stride);
      continue;
    }
    const int ymin = vertical.Min(yy) - src_first;
    const int count = vertical.Count(yy);
    const int32_t* k = vertical.Weights(yy);
    for (size_t i = 0; i < temp_stride; ++i) {
      int32_t s = 1 << (kPrecisionBits - 1);
      const uint8_t* in = &temp[static_cast<size_t>(ymin) * temp_stride + i];
      for (int y = 0; y < count; ++y, in += temp_stride) s += *in * k[y];
      out[i] = Clip8(s);
    }
  }
  return result;
}

// Python's round() of d / 2 for d >= 0: halves go to the even neighbour.
int HalfRoundedEven(int d) {
  const int k = d / 2;
  if (d % 2 == 0) return k;
  return k % 2 == 0 ? k : k + 1;
}

struct CropWindow {
  int left = 0;
  int top = 0;
};

// torchvision's center_crop: pad sides smaller than the crop, then round((D - d) / 2).
CropWindow CenterCropWindow(int width, int height, int crop_width, int crop_height) {
  const int pad_left = crop_width > width ? (crop_width - width) / 2 : 0;
  const int pad_right = crop_width > width ? (crop_width - width + 1) / 2 : 0;
  const int pad_top = crop_height > height ? (crop_height - height) / 2 : 0;
  const int pad_bottom = crop_height > height ? (crop_height - height + 1) / 2 : 0;
  const int padded_width = width + pad_left + pad_right;
  const int padded_height = height + pad_top + pad_bottom;
  CropWindow window;
  window.left = HalfRoundedEven(padded_width - crop_width) - pad_left;
  window.top = HalfRoundedEven(padded_height - crop_height) - pad_top;
  return window;
}

}  // namespace

StatusOr<RgbImage> DecodeImage(std::string_view bytes) {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return DecodeJpeg(bytes);
  if (bytes.size() >= 8 && png_sig_cmp(b, 0, 8) == 0) return DecodePng(bytes);
  if (bytes.empty()) return Status::InvalidArgument("not a JPEG or PNG image (empty body)");
  return Status::InvalidArgument("not a JPEG or PNG image (" + std::to_string(bytes.size()) +
                                 " bytes, first bytes " + HexPrefix(bytes) + ")");
}

ImageSize ResizedSize(int width, int height, int size) {
  const int short_side = std::min(width, height);
  const int long_side = std::max(width, height);
  if (short_side <= 0) return ImageSize{};
  // Python's int(size * long / short): a correctly rounded double quotient, truncated.
  const auto new_long = static_cast<int64_t>(static_cast<double>(int64_t{size} * long_side) /
                                             static_cast<double>(short_side));
  const int clamped =
      static_cast<int>(std::min<int64_t>(new_long, std::numeric_limits<int>::max()));
  return width <= height ? ImageSize{size, clamped} : ImageSize{clamped, size};
}

RgbImage ResizeShorterSide(const RgbImage& image, int size) {
  const ImageSize out = ResizedSize(image.width, image.height, size);
  if (out.width == image.width && out.height == image.height) return image;
  return ResampleWindow(image, out.width, out.height, 0, 0, out.width, out.height);
}

RgbImage CenterCrop(const RgbImage& image, int width, int height) {
  const CropWindow window = CenterCropWindow(image.width, image.height, width, height);
  // Resampling to the same size copies: ResampleWindow then only crops and pads.
  return ResampleWindow(image, image.width, image.height, window.left, window.top, width, height);
}

RgbImage ResizeShorterSideAndCenterCrop(const RgbImage& image, int size, int crop_width,
                                        int crop_height) {
  const ImageSize out = ResizedSize(image.width, image.height, size);
  const CropWindow window = CenterCropWindow(out.width, out.height, crop_width, crop_height);
  return ResampleWindow(image, out.width, out.height, window.left, window.top, crop_width,
                        crop_height);
}

void ToNormalizedChw(const RgbImage& image, const std::array<float, 3>& mean,
                     const std::array<float, 3>& std, float* out) {
  const size_t plane = static_cast<size_t>(image.width) * image.height;
  // Per byte value and channel, computed as torch does: (p / 255.f - mean) / std in float.
  float table[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      table[c][v] = (static_cast<float>(v) / 255.0f - mean[static_cast<size_t>(c)]) /
                    std[static_cast<size_t>(c)];
    }
  }
  const uint8_t* in = image.pixels.data();
  for (size_t i = 0; i < plane; ++i, in += 3) {
    out[i] = table[0][in[0]];
    out[plane + i] = table[1][in[1]];
    out[2 * plane + i] = table[2][in[2]];
  }
}

std::vector<float> ToNormalizedChw(const RgbImage& image, const std::array<float, 3>& mean,
                                   const std::array<float, 3>& std) {
  std::vector<float> out(static_cast<size_t>(image.width) * image.height * 3);
  ToNormalizedChw(image, mean, std, out.data());
  return out;
}

}  // namespace tserve::backend
