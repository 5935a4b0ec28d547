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
#include <optional>
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

// The limits every decoder checks once it knows the size, before it allocates anything
// sized by it.
Status CheckSize(const char* format, int64_t width, int64_t height) {
  if (width * height > kMaxImagePixels) return TooLarge(format, width, height);
  if (width > kMaxImageSide || height > kMaxImageSide) {
    return Status::InvalidArgument(std::string(format) +
                                   " image too large: " + std::to_string(width) + "x" +
                                   std::to_string(height) + " exceeds the limit of " +
                                   std::to_string(kMaxImageSide) + " pixels a side");
  }
  return Status::Ok();
}

// Where a decoder delivers its image: Start once with its size (the sink allocates what it
// needs, or refuses), then Row for y = 0, 1, ..., height - 1 in order, each row width * 3
// bytes of RGB valid only during the call. Row does not allocate and does not throw.
class RowSink {
 public:
  virtual ~RowSink() = default;
  virtual Status Start(const char* format, int width, int height) = 0;
  virtual void Row(int y, const uint8_t* rgb) = 0;
};

// ---- JPEG -------------------------------------------------------------------------------
//
// libjpeg reports errors by calling error_exit, which must not return; the default calls
// exit(). Ours longjmps back to the setjmp in the function that made the libjpeg call. To
// keep that jump well defined in C++, the functions that call setjmp have no locals with
// destructors and no locals modified after setjmp that are read after the jump: all state
// lives in a JpegState owned by the caller, whose destructor releases libjpeg's memory.
// (RowSink::Row runs between libjpeg calls, never under one: no jump crosses it.)

struct JpegErrorManager {
  jpeg_error_mgr mgr;  // first: libjpeg hands back a jpeg_error_mgr*
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

struct JpegState {
  jpeg_decompress_struct cinfo{};
  JpegErrorManager error{};
  bool created = false;
  bool multiple_scans = false;  // progressive or multi-scan: every coefficient is kept

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
  state->multiple_scans = jpeg_has_multiple_scans(&state->cinfo) != FALSE;
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

// The bytes of DCT coefficients libjpeg keeps for a multi-scan image (its whole-image
// coefficient buffer, jdcoefct.c: each component's blocks rounded up to its sampling
// factors, 64 JCOEFs a block). Valid after jpeg_read_header.
int64_t JpegCoefficientBytes(const jpeg_decompress_struct& cinfo) {
  auto round_up = [](int64_t a, int64_t b) { return (a + b - 1) / b * b; };
  int64_t bytes = 0;
  for (int ci = 0; ci < cinfo.num_components; ++ci) {
    const jpeg_component_info& c = cinfo.comp_info[ci];
    bytes += round_up(c.width_in_blocks, c.h_samp_factor) *
             round_up(c.height_in_blocks, c.v_samp_factor) * int64_t{sizeof(JBLOCK)};
  }
  return bytes;
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

bool JpegStart(JpegState* state) {
  if (setjmp(state->error.jump) != 0) return false;
  jpeg_start_decompress(&state->cinfo);
  return true;
}

// Decodes row by row into `sink`: `row` holds width * 3 bytes, `cmyk_row` width * 4.
bool JpegDecodeRows(JpegState* state, uint8_t* row, uint8_t* cmyk_row, RowSink* sink) {
  if (setjmp(state->error.jump) != 0) return false;
  jpeg_decompress_struct* cinfo = &state->cinfo;
  const bool cmyk = cinfo->out_color_space == JCS_CMYK;
  while (cinfo->output_scanline < cinfo->output_height) {
    const auto y = static_cast<int>(cinfo->output_scanline);
    JSAMPROW out = cmyk ? cmyk_row : row;
    if (jpeg_read_scanlines(cinfo, &out, 1) != 1) {
      std::snprintf(state->error.message, sizeof(state->error.message), "no scanline decoded");
      return false;
    }
    if (cmyk) CmykRowToRgb(cmyk_row, static_cast<int>(cinfo->output_width), row);
    sink->Row(y, row);
  }
  jpeg_finish_decompress(cinfo);
  return true;
}

Status DecodeJpeg(std::string_view bytes, RowSink* sink) {
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
  if (Status size = CheckSize("JPEG", width, height); !size.ok()) return size;
  if (state.multiple_scans) {
    const int64_t coefficients = JpegCoefficientBytes(state.cinfo);
    if (coefficients > kMaxBufferedImageBytes) {
      return Status::InvalidArgument(
          std::string(state.cinfo.progressive_mode ? "progressive" : "multi-scan") +
          " JPEG image too large: " + std::to_string(width) + "x" + std::to_string(height) +
          " keeps " + std::to_string(coefficients) +
          " bytes of DCT coefficients, more than the limit of " +
          std::to_string(kMaxBufferedImageBytes) + " (a baseline JPEG may have up to " +
          std::to_string(kMaxImagePixels) + " pixels)");
    }
  }
  // A net under the check above: libjpeg refuses ("Backing store not supported") rather
  // than allocate whole-image buffers beyond this.
  state.cinfo.mem->max_memory_to_use = static_cast<long>(kMaxBufferedImageBytes + (16 << 20));

  std::vector<uint8_t> row;
  std::vector<uint8_t> cmyk_row;
  try {
    row.resize(static_cast<size_t>(width) * 3);
    if (state.cinfo.out_color_space == JCS_CMYK) cmyk_row.resize(static_cast<size_t>(width) * 4);
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted("out of memory decoding a JPEG image");
  }
  if (!JpegStart(&state)) {
    return Status::InvalidArgument(std::string("invalid JPEG image: ") + state.error.message);
  }
  if (static_cast<int64_t>(state.cinfo.output_width) != width ||
      static_cast<int64_t>(state.cinfo.output_height) != height) {
    return Status::Internal("JPEG decoder changed the image size");
  }
  if (Status started = sink->Start("JPEG", static_cast<int>(width), static_cast<int>(height));
      !started.ok()) {
    return started;
  }
  if (!JpegDecodeRows(&state, row.data(), cmyk_row.data(), sink)) {
    return Status::InvalidArgument(std::string("invalid JPEG image: ") + state.error.message);
  }
  return Status::Ok();
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

// Reads the chunks up to the image data (the size: nothing is allocated by it yet).
bool PngReadInfo(PngState* state) {
  if (setjmp(png_jmpbuf(state->png)) != 0) return false;
  png_set_read_fn(state->png, state, PngRead);
  // CheckSize bounds the sides, with its own message; libpng's defaults (1,000,000) would
  // refuse first with "Invalid IHDR data".
  png_set_user_limits(state->png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
  png_read_info(state->png, state->info);
  return true;
}

// Sets the transformations to RGB8 (PIL's convert("RGB")); allocates libpng's row buffers.
bool PngSetTransforms(PngState* state) {
  if (setjmp(png_jmpbuf(state->png)) != 0) return false;
  png_structp png = state->png;
  png_infop info = state->info;
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

// A non-interlaced image, row by row into `sink` through `row` (width * 3 bytes).
bool PngReadRowByRow(PngState* state, png_bytep row, int height, RowSink* sink) {
  if (setjmp(png_jmpbuf(state->png)) != 0) return false;
  for (int y = 0; y < height; ++y) {
    png_read_row(state->png, row, nullptr);
    sink->Row(y, row);
  }
  return true;
}

// An interlaced image, whole (its passes each cover the whole image).
bool PngReadWhole(PngState* state, png_bytepp rows) {
  if (setjmp(png_jmpbuf(state->png)) != 0) return false;
  png_read_image(state->png, rows);
  return true;
}

Status DecodePng(std::string_view bytes, RowSink* sink) {
  PngState state;
  state.data = bytes;
  state.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, PngError, PngWarning);
  if (state.png == nullptr) return Status::ResourceExhausted("cannot create a PNG decoder");
  state.info = png_create_info_struct(state.png);
  if (state.info == nullptr) return Status::ResourceExhausted("cannot create a PNG decoder");
  if (!PngReadInfo(&state)) {
    return Status::InvalidArgument(std::string("invalid PNG image: ") + state.message);
  }
  const int64_t width = png_get_image_width(state.png, state.info);
  const int64_t height = png_get_image_height(state.png, state.info);
  if (Status size = CheckSize("PNG", width, height); !size.ok()) return size;
  const bool interlaced = png_get_interlace_type(state.png, state.info) != PNG_INTERLACE_NONE;
  if (interlaced && width * height * 3 > kMaxBufferedImageBytes) {
    return Status::InvalidArgument(
        "interlaced PNG image too large: " + std::to_string(width) + "x" + std::to_string(height) +
        " is decoded whole into " + std::to_string(width * height * 3) +
        " bytes, more than the limit of " + std::to_string(kMaxBufferedImageBytes) +
        " (a PNG that is not interlaced may have up to " + std::to_string(kMaxImagePixels) +
        " pixels)");
  }
  if (!PngSetTransforms(&state)) {
    return Status::InvalidArgument(std::string("invalid PNG image: ") + state.message);
  }
  if (png_get_channels(state.png, state.info) != 3 ||
      png_get_bit_depth(state.png, state.info) != 8 ||
      png_get_rowbytes(state.png, state.info) != static_cast<size_t>(width) * 3) {
    return Status::InvalidArgument("unsupported PNG pixel layout");
  }

  const auto stride = static_cast<size_t>(width) * 3;
  std::vector<uint8_t> pixels;  // a row, or the whole image if interlaced
  std::vector<png_bytep> rows;
  try {
    pixels.resize(interlaced ? stride * static_cast<size_t>(height) : stride);
    if (interlaced) rows.resize(static_cast<size_t>(height));
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted("out of memory decoding a PNG image");
  }
  if (Status started = sink->Start("PNG", static_cast<int>(width), static_cast<int>(height));
      !started.ok()) {
    return started;
  }
  if (!interlaced) {
    if (!PngReadRowByRow(&state, pixels.data(), static_cast<int>(height), sink)) {
      return Status::InvalidArgument(std::string("invalid PNG image: ") + state.message);
    }
    return Status::Ok();
  }
  for (size_t y = 0; y < rows.size(); ++y) rows[y] = pixels.data() + y * stride;
  if (!PngReadWhole(&state, rows.data())) {
    return Status::InvalidArgument(std::string("invalid PNG image: ") + state.message);
  }
  for (size_t y = 0; y < rows.size(); ++y) sink->Row(static_cast<int>(y), rows[y]);
  return Status::Ok();
}

Status Decode(std::string_view bytes, RowSink* sink) {
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
    return DecodeJpeg(bytes, sink);
  }
  if (bytes.size() >= 8 && png_sig_cmp(b, 0, 8) == 0) return DecodePng(bytes, sink);
  if (bytes.empty()) return Status::InvalidArgument("not a JPEG or PNG image (empty body)");
  return Status::InvalidArgument("not a JPEG or PNG image (" + std::to_string(bytes.size()) +
                                 " bytes, first bytes " + HexPrefix(bytes) + ")");
}

// Collects the rows into an RgbImage of at most max_pixels pixels.
class WholeImageSink : public RowSink {
 public:
  explicit WholeImageSink(int64_t max_pixels) : max_pixels_(max_pixels) {}
  Status Start(const char* format, int width, int height) override {
    if (int64_t{width} * height > max_pixels_) {
      return Status::InvalidArgument(std::string(format) +
                                     " image too large: " + std::to_string(width) + "x" +
                                     std::to_string(height) + " exceeds the limit of " +
                                     std::to_string(max_pixels_) + " pixels");
    }
    try {
      image_.pixels.resize(static_cast<size_t>(width) * static_cast<size_t>(height) * 3);
    } catch (const std::bad_alloc&) {
      return Status::ResourceExhausted(std::string("out of memory decoding a ") + format +
                                       " image");
    }
    image_.width = width;
    image_.height = height;
    return Status::Ok();
  }
  void Row(int y, const uint8_t* rgb) override {
    const size_t stride = static_cast<size_t>(image_.width) * 3;
    std::memcpy(image_.pixels.data() + static_cast<size_t>(y) * stride, rgb, stride);
  }
  RgbImage Take() { return std::move(image_); }

 private:
  const int64_t max_pixels_;
  RgbImage image_;
};

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

// The window [x0, x0 + w) x [y0, y0 + h) of an in_w x in_h image resized to out_w x out_h,
// fed the source image a row at a time; pixels of the window outside the resized image are
// 0 (CenterCrop's padding). Only the source rows [first_row(), last_row()) are needed: the
// vertical filter's support around the window's rows. Memory: the coefficients (bounded by
// the window, see PrecomputeCoefficients), the w x h output, and the horizontal pass of the
// needed rows, min(w, out_w) x (last_row() - first_row()) x 3 bytes: never the whole image.
// Whether given the rows of a decoder or of an RgbImage, the arithmetic is the same.
class WindowResampler {
 public:
  // Allocates; may throw std::bad_alloc.
  WindowResampler(int in_w, int in_h, int out_w, int out_h, int x0, int y0, int w, int h)
      : x0_(x0), y0_(y0), w_(w) {
    result_.width = w;
    result_.height = h;
    result_.pixels.assign(static_cast<size_t>(w) * h * 3, 0);
    // The part of the window inside the resized image.
    cx0_ = std::max(x0, 0);
    cx1_ = std::min(x0 + w, out_w);
    cy0_ = std::max(y0, 0);
    cy1_ = std::min(y0 + h, out_h);
    if (cx0_ >= cx1_ || cy0_ >= cy1_) {
      cx1_ = cx0_;
      cy1_ = cy0_;
      return;  // nothing to compute: no row needed
    }
    need_horizontal_ = out_w != in_w;
    need_vertical_ = out_h != in_h;
    src_first_ = cy0_;
    src_last_ = cy1_;
    if (need_vertical_) {
      vertical_ = PrecomputeCoefficients(in_h, out_h, cy0_, cy1_);
      src_first_ = vertical_.Min(cy0_);
      src_last_ = vertical_.Min(cy1_ - 1) + vertical_.Count(cy1_ - 1);
    }
    if (need_horizontal_) horizontal_ = PrecomputeCoefficients(in_w, out_w, cx0_, cx1_);
    temp_stride_ = static_cast<size_t>(cx1_ - cx0_) * 3;
    temp_.resize(temp_stride_ * static_cast<size_t>(src_last_ - src_first_));
  }

  int first_row() const { return src_first_; }
  int last_row() const { return src_last_; }

  // The horizontal pass of source row y (in_w x 3 bytes), first_row() <= y < last_row().
  void AddRow(int y, const uint8_t* in_row) {
    uint8_t* out = &temp_[static_cast<size_t>(y - src_first_) * temp_stride_];
    if (!need_horizontal_) {
      std::memcpy(out, in_row + static_cast<size_t>(cx0_) * 3, temp_stride_);
      return;
    }
    for (int xx = cx0_; xx < cx1_; ++xx, out += 3) {
      const int xmin = horizontal_.Min(xx);
      const int count = horizontal_.Count(xx);
      const int32_t* k = horizontal_.Weights(xx);
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

  // The vertical pass, once every needed row was added: the window.
  RgbImage Finish() {
    for (int yy = cy0_; yy < cy1_; ++yy) {
      uint8_t* out = &result_.pixels[(static_cast<size_t>(yy - y0_) * w_ + (cx0_ - x0_)) * 3];
      if (!need_vertical_) {
        std::memcpy(out, &temp_[static_cast<size_t>(yy - src_first_) * temp_stride_], temp_stride_);
        continue;
      }
      const int ymin = vertical_.Min(yy) - src_first_;
      const int count = vertical_.Count(yy);
      const int32_t* k = vertical_.Weights(yy);
      for (size_t i = 0; i < temp_stride_; ++i) {
        int32_t s = 1 << (kPrecisionBits - 1);
        const uint8_t* in = &temp_[static_cast<size_t>(ymin) * temp_stride_ + i];
        for (int y = 0; y < count; ++y, in += temp_stride_) s += *in * k[y];
        out[i] = Clip8(s);
      }
    }
    return std::move(result_);
  }

 private:
  int x0_;
  int y0_;
  int w_;
  int cx0_ = 0;
  int cx1_ = 0;
  int cy0_ = 0;
  int cy1_ = 0;
  bool need_horizontal_ = false;
  bool need_vertical_ = false;
  int src_first_ = 0;  // the source rows the vertical pass reads: [src_first_, src_last_)
  int src_last_ = 0;
  Coefficients horizontal_;
  Coefficients vertical_;
  size_t temp_stride_ = 0;
  std::vector<uint8_t> temp_;  // the horizontal pass of rows [src_first_, src_last_)
  RgbImage result_;
};

// The window of `image` resized to out_w x out_h (see WindowResampler).
RgbImage ResampleWindow(const RgbImage& image, int out_w, int out_h, int x0, int y0, int w, int h) {
  WindowResampler resampler(image.width, image.height, out_w, out_h, x0, y0, w, h);
  const size_t stride = static_cast<size_t>(image.width) * 3;
  for (int y = resampler.first_row(); y < resampler.last_row(); ++y) {
    resampler.AddRow(y, &image.pixels[static_cast<size_t>(y) * stride]);
  }
  return resampler.Finish();
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
  return DecodeImage(bytes, kMaxImagePixels);
}

StatusOr<RgbImage> DecodeImage(std::string_view bytes, int64_t max_pixels) {
  WholeImageSink sink(max_pixels);
  if (Status status = Decode(bytes, &sink); !status.ok()) return status;
  return sink.Take();
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

StatusOr<RgbImage> DecodeResizeAndCenterCrop(std::string_view bytes, int size, int crop_width,
                                             int crop_height) {
  // Feeds the decoder's rows straight into the horizontal pass of the crop's resize.
  class ResizeCropSink : public RowSink {
   public:
    ResizeCropSink(int size, int crop_width, int crop_height)
        : size_(size), crop_width_(crop_width), crop_height_(crop_height) {}
    Status Start(const char* format, int width, int height) override {
      const ImageSize out = ResizedSize(width, height, size_);
      const CropWindow window = CenterCropWindow(out.width, out.height, crop_width_, crop_height_);
      try {
        resampler_.emplace(width, height, out.width, out.height, window.left, window.top,
                           crop_width_, crop_height_);
      } catch (const std::bad_alloc&) {
        return Status::ResourceExhausted(std::string("out of memory resizing a ") + format +
                                         " image");
      }
      return Status::Ok();
    }
    void Row(int y, const uint8_t* rgb) override {
      if (y >= resampler_->first_row() && y < resampler_->last_row()) resampler_->AddRow(y, rgb);
    }
    RgbImage Finish() { return resampler_->Finish(); }

   private:
    const int size_;
    const int crop_width_;
    const int crop_height_;
    std::optional<WindowResampler> resampler_;
  };

  ResizeCropSink sink(size, crop_width, crop_height);
  if (Status status = Decode(bytes, &sink); !status.ok()) return status;
  return sink.Finish();
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
