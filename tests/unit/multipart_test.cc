// multipart/form-data parsing (api/multipart.h).

#include "api/multipart.h"

#include <gtest/gtest.h>

#include <string>

namespace tserve::api {
namespace {

std::string Body(const std::string& boundary, int parts) {
  std::string body;
  for (int i = 0; i < parts; ++i) {
    body += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"p" + std::to_string(i) +
            "\"\r\n\r\nvalue" + std::to_string(i) + "\r\n";
  }
  body += "--" + boundary + "--\r\n";
  return body;
}

TEST(MultipartTest, BoundaryFromContentType) {
  EXPECT_EQ(MultipartBoundary("multipart/form-data; boundary=abc"), "abc");
  EXPECT_EQ(MultipartBoundary("Multipart/Form-Data; charset=x; boundary=\"a b\""), "a b");
  EXPECT_EQ(MultipartBoundary("application/json"), "");
  EXPECT_EQ(MultipartBoundary("multipart/form-data"), "");
}

TEST(MultipartTest, SplitsParts) {
  const std::string body =
      "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"data\"; "
      "filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\x01\x02\r\n-XyZ\r\n"
      "--XyZ\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\nhello\r\n--XyZ--\r\n";
  auto parts = ParseMultipart(body, "XyZ");
  ASSERT_TRUE(parts.ok()) << parts.status().message();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].name, "data");
  EXPECT_EQ((*parts)[0].filename, "a.jpg");
  EXPECT_EQ((*parts)[0].content_type, "image/jpeg");
  EXPECT_EQ((*parts)[0].data, "\x01\x02\r\n-XyZ");
  EXPECT_EQ((*parts)[1].name, "body");
  EXPECT_EQ((*parts)[1].data, "hello");
}

TEST(MultipartTest, MalformedBodiesAreErrors) {
  EXPECT_FALSE(ParseMultipart("--b\r\n\r\nno end", "b").ok());
  EXPECT_FALSE(ParseMultipart("no boundary at all", "b").ok());
  EXPECT_FALSE(ParseMultipart("--b\r\nno blank line", "b").ok());
  EXPECT_FALSE(ParseMultipart("--b", "").ok());
}

// Issue 7 #14: a 7,901-character boundary made every search quadratic.
TEST(MultipartTest, BoundaryLongerThanRfc2046AllowsIsRefused) {
  const std::string ok(kMaxMultipartBoundary, 'b');
  auto parts = ParseMultipart(Body(ok, 2), ok);
  ASSERT_TRUE(parts.ok()) << parts.status().message();
  EXPECT_EQ(parts->size(), 2u);

  for (size_t length : {kMaxMultipartBoundary + 1, size_t{7901}}) {
    const std::string boundary(length, 'b');
    auto refused = ParseMultipart(Body(boundary, 1), boundary);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(refused.status().message(), "multipart boundary of " + std::to_string(length) +
                                              " characters: at most 70 are allowed (RFC 2046)");
  }
}

TEST(MultipartTest, PartCountIsCapped) {
  auto parts = ParseMultipart(Body("b", static_cast<int>(kMaxMultipartParts)), "b");
  ASSERT_TRUE(parts.ok()) << parts.status().message();
  EXPECT_EQ(parts->size(), kMaxMultipartParts);
  auto refused = ParseMultipart(Body("b", static_cast<int>(kMaxMultipartParts) + 1), "b");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(), "multipart body with more than 64 parts");
}

TEST(MultipartTest, NearMissBoundariesInALargeBodyParseCorrectly) {
  // Data full of almost-delimiters (the worst case of a naive search) still splits right.
  const std::string boundary(70, 'x');
  std::string near = "\r\n--" + std::string(69, 'x') + "y";
  std::string data;
  while (data.size() < (1u << 20)) data += near;
  const std::string body = "--" + boundary +
                           "\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n" + data +
                           "\r\n--" + boundary + "--";
  auto parts = ParseMultipart(body, boundary);
  ASSERT_TRUE(parts.ok()) << parts.status().message();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].data.size(), data.size());
}

// RFC 2046: a delimiter is "\r\n--" boundary followed by optional whitespace and CRLF, or
// by "--" (then optional whitespace, and CRLF or the end) for the last one. Anything else
// after "\r\n--boundary" is part of the data.
TEST(MultipartTest, BoundaryFollowedByOtherTextIsData) {
  const std::string boundary = "XyZ";
  for (const std::string data :
       {"a\r\n--XyZX", "a\r\n--XyZX\r\nmore", "\r\n--XyZ-", "\r\n--XyZ--x\r\n", "\r\n--XyZ \t?\r\n",
        "\r\n--XyZ\r", "\r\n--XyZ\n--XyZ"}) {
    SCOPED_TRACE(testing::PrintToString(data));
    const std::string body = "--XyZ\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n" +
                             data +
                             "\r\n--XyZ\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n"
                             "hello\r\n--XyZ--\r\n";
    auto parts = ParseMultipart(body, boundary);
    ASSERT_TRUE(parts.ok()) << parts.status().message();
    ASSERT_EQ(parts->size(), 2u);
    EXPECT_EQ((*parts)[0].name, "data");
    EXPECT_EQ((*parts)[0].data, data);
    EXPECT_EQ((*parts)[1].name, "b");
    EXPECT_EQ((*parts)[1].data, "hello");
  }
}

TEST(MultipartTest, DelimitersMayEndInWhitespace) {
  // Transport padding (spaces and tabs) before the CRLF, and after the closing "--".
  const std::string body =
      "--b \t\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\none\r\n--b\t\r\n"
      "Content-Disposition: form-data; name=\"y\"\r\n\r\ntwo\r\n--b-- \r\nepilogue";
  auto parts = ParseMultipart(body, "b");
  ASSERT_TRUE(parts.ok()) << parts.status().message();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].data, "one");
  EXPECT_EQ((*parts)[1].data, "two");
  // The closing delimiter may end the body; the first boundary line may follow a preamble
  // line, and "--b" inside the preamble's text is not it.
  parts = ParseMultipart("pre--bamble\r\n--b\r\nName: v\r\n\r\nv\r\n--b--", "b");
  ASSERT_TRUE(parts.ok()) << parts.status().message();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].data, "v");
  // Without a real delimiter after the data, the part is unterminated.
  parts = ParseMultipart("--b\r\nName: v\r\n\r\nv\r\n--bX", "b");
  ASSERT_FALSE(parts.ok());
  EXPECT_EQ(parts.status().message(), "multipart part without a closing boundary");
}

}  // namespace
}  // namespace tserve::api
