#include "http/request.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tserve::http {
namespace {

using Params = std::vector<std::pair<std::string, std::string>>;

// Records what a Responder delivers.
class CaptureTarget final : public ResponseTarget {
 public:
  void Deliver(Response response) override {
    ++deliveries;
    last = std::move(response);
  }
  int deliveries = 0;
  Response last;
};

// ---- ParseMethod / MethodName ----

TEST(MethodTest, ParseMethodKnownMethods) {
  EXPECT_EQ(ParseMethod("GET"), Method::kGet);
  EXPECT_EQ(ParseMethod("HEAD"), Method::kHead);
  EXPECT_EQ(ParseMethod("POST"), Method::kPost);
  EXPECT_EQ(ParseMethod("PUT"), Method::kPut);
  EXPECT_EQ(ParseMethod("DELETE"), Method::kDelete);
  EXPECT_EQ(ParseMethod("OPTIONS"), Method::kOptions);
  EXPECT_EQ(ParseMethod("PATCH"), Method::kPatch);
}

TEST(MethodTest, ParseMethodIsCaseSensitiveAndExact) {
  // RFC 9110: method names are case-sensitive.
  EXPECT_EQ(ParseMethod("get"), Method::kOther);
  EXPECT_EQ(ParseMethod("Get"), Method::kOther);
  EXPECT_EQ(ParseMethod("GET "), Method::kOther);
  EXPECT_EQ(ParseMethod("GETX"), Method::kOther);
  EXPECT_EQ(ParseMethod(""), Method::kOther);
  EXPECT_EQ(ParseMethod("TRACE"), Method::kOther);
  EXPECT_EQ(ParseMethod("CONNECT"), Method::kOther);
}

TEST(MethodTest, MethodNameRoundTrips) {
  for (Method m : {Method::kGet, Method::kHead, Method::kPost, Method::kPut, Method::kDelete,
                   Method::kOptions, Method::kPatch}) {
    EXPECT_EQ(ParseMethod(MethodName(m)), m) << MethodName(m);
  }
  EXPECT_STREQ(MethodName(Method::kOther), "OTHER");
}

// ---- ParseQuery (Netty QueryStringDecoder semantics) ----

// issue 8 #8: only a bounded token of [A-Za-z0-9._-] is echoed as x-request-id.
TEST(RequestIdTest, AcceptsBoundedTokensOnly) {
  EXPECT_TRUE(IsAcceptableRequestId("a"));
  EXPECT_TRUE(IsAcceptableRequestId("Req-1.2_x"));
  EXPECT_TRUE(IsAcceptableRequestId("123e4567-e89b-12d3-a456-426614174000"));
  EXPECT_TRUE(IsAcceptableRequestId(std::string(kMaxRequestIdLength, 'x')));
  EXPECT_FALSE(IsAcceptableRequestId(""));
  EXPECT_FALSE(IsAcceptableRequestId(std::string(kMaxRequestIdLength + 1, 'x')));
  for (const char* bad : {"a b", "a\tb", "a\r\nSet-Cookie: x", "\"q\"", "a/b", "a:b", "\xc3\xbc",
                          "a\x7f", "{x}", "%41"}) {
    EXPECT_FALSE(IsAcceptableRequestId(bad)) << bad;
  }
}

TEST(ParseQueryTest, Empty) {
  EXPECT_TRUE(ParseQuery("").empty());
  EXPECT_TRUE(ParseQuery("&").empty());
  EXPECT_TRUE(ParseQuery(";;&&").empty());
}

TEST(ParseQueryTest, SplitsOnAmpersandAndSemicolon) {
  EXPECT_EQ(ParseQuery("a=1&b=2"), (Params{{"a", "1"}, {"b", "2"}}));
  EXPECT_EQ(ParseQuery("a=1;b=2"), (Params{{"a", "1"}, {"b", "2"}}));
  EXPECT_EQ(ParseQuery("a=1;b=2&c=3"), (Params{{"a", "1"}, {"b", "2"}, {"c", "3"}}));
}

TEST(ParseQueryTest, SkipsEmptyParameters) {
  EXPECT_EQ(ParseQuery("&&a=1&&b=2&"), (Params{{"a", "1"}, {"b", "2"}}));
  EXPECT_EQ(ParseQuery(";a=1;"), (Params{{"a", "1"}}));
}

TEST(ParseQueryTest, KeepsOrderAndRepeats) {
  EXPECT_EQ(ParseQuery("b=2&a=1&b=3&b=2"),
            (Params{{"b", "2"}, {"a", "1"}, {"b", "3"}, {"b", "2"}}));
}

TEST(ParseQueryTest, KeyWithoutEqualsHasEmptyValue) {
  EXPECT_EQ(ParseQuery("flag"), (Params{{"flag", ""}}));
  EXPECT_EQ(ParseQuery("flag&x=1"), (Params{{"flag", ""}, {"x", "1"}}));
  EXPECT_EQ(ParseQuery("x=1;flag"), (Params{{"x", "1"}, {"flag", ""}}));
  EXPECT_EQ(ParseQuery("a="), (Params{{"a", ""}}));
}

TEST(ParseQueryTest, ValueKeepsLaterEquals) {
  EXPECT_EQ(ParseQuery("a=1=2"), (Params{{"a", "1=2"}}));
  EXPECT_EQ(ParseQuery("a==b"), (Params{{"a", "=b"}}));
}

TEST(ParseQueryTest, LeadingEqualsAsNetty) {
  // Netty skips '=' at the start of a parameter, so it never yields an empty name:
  // "=v" is the name "v" with an empty value, and "=" alone is no parameter at all.
  EXPECT_EQ(ParseQuery("=v"), (Params{{"v", ""}}));
  EXPECT_EQ(ParseQuery("==v"), (Params{{"v", ""}}));
  EXPECT_EQ(ParseQuery("=v=w"), (Params{{"v", "w"}}));
  EXPECT_TRUE(ParseQuery("=").empty());
  EXPECT_EQ(ParseQuery("a=1&=&b=2"), (Params{{"a", "1"}, {"b", "2"}}));
}

TEST(ParseQueryTest, PercentDecodesNamesAndValues) {
  EXPECT_EQ(ParseQuery("q=hello%20world%21"), (Params{{"q", "hello world!"}}));
  EXPECT_EQ(ParseQuery("name%5B%5D=Requests2XX"), (Params{{"name[]", "Requests2XX"}}));
  EXPECT_EQ(ParseQuery("name%5b%5d=Requests2XX"), (Params{{"name[]", "Requests2XX"}}));
  EXPECT_EQ(ParseQuery("name[]=A&name%5B%5D=B"), (Params{{"name[]", "A"}, {"name[]", "B"}}));
  // UTF-8 bytes.
  EXPECT_EQ(ParseQuery("m=caf%C3%A9"), (Params{{"m", "caf\xC3\xA9"}}));
}

TEST(ParseQueryTest, PlusIsSpace) {
  EXPECT_EQ(ParseQuery("a+b=c+d"), (Params{{"a b", "c d"}}));
  EXPECT_EQ(ParseQuery("p=%2B"), (Params{{"p", "+"}}));
}

TEST(ParseQueryTest, EncodedSeparatorsDoNotSplit) {
  EXPECT_EQ(ParseQuery("url=http%3A%2F%2Fx%2Fm.mar%3Fa%3D1%26b%3D2%3Bc"),
            (Params{{"url", "http://x/m.mar?a=1&b=2;c"}}));
  EXPECT_EQ(ParseQuery("k%3Dv=1"), (Params{{"k=v", "1"}}));
}

TEST(ParseQueryTest, MalformedEscapesKeptLiterally) {
  // Documented leniency (common/strings.h): bad %XX escapes are kept as they are.
  EXPECT_EQ(ParseQuery("a=%zz"), (Params{{"a", "%zz"}}));
  EXPECT_EQ(ParseQuery("a=%"), (Params{{"a", "%"}}));
  EXPECT_EQ(ParseQuery("a=%4"), (Params{{"a", "%4"}}));
  EXPECT_EQ(ParseQuery("a=50%25"), (Params{{"a", "50%"}}));
}

// ---- AcceptsGzip ----

TEST(AcceptsGzipTest, Plain) {
  EXPECT_TRUE(AcceptsGzip("gzip"));
  EXPECT_TRUE(AcceptsGzip("gzip, deflate"));
  EXPECT_TRUE(AcceptsGzip("deflate, gzip"));
  EXPECT_TRUE(AcceptsGzip("br,gzip"));
}

TEST(AcceptsGzipTest, IsCaseInsensitive) {
  EXPECT_TRUE(AcceptsGzip("GZIP"));
  EXPECT_TRUE(AcceptsGzip("GZip;Q=1"));
  EXPECT_FALSE(AcceptsGzip("gzip;Q=0"));
}

TEST(AcceptsGzipTest, ToleratesSpaces) {
  EXPECT_TRUE(AcceptsGzip("  gzip  "));
  EXPECT_TRUE(AcceptsGzip("deflate ,  gzip ; q=0.5 "));
  EXPECT_FALSE(AcceptsGzip("deflate , gzip ; q=0 "));
}

TEST(AcceptsGzipTest, QValues) {
  EXPECT_TRUE(AcceptsGzip("gzip;q=1"));
  EXPECT_TRUE(AcceptsGzip("gzip;q=1.0"));
  EXPECT_TRUE(AcceptsGzip("gzip;q=0.001"));
  EXPECT_FALSE(AcceptsGzip("gzip;q=0"));
  EXPECT_FALSE(AcceptsGzip("gzip;q=0.0"));
  EXPECT_FALSE(AcceptsGzip("gzip;q=0.000"));
  EXPECT_TRUE(AcceptsGzip("br;q=1.0, gzip;q=0.8, *;q=0.1"));
  // A parameter other than q does not refuse.
  EXPECT_TRUE(AcceptsGzip("gzip;level=0"));
}

TEST(AcceptsGzipTest, Wildcard) {
  EXPECT_TRUE(AcceptsGzip("*"));
  EXPECT_TRUE(AcceptsGzip("deflate, *"));
  EXPECT_FALSE(AcceptsGzip("*;q=0"));
}

TEST(AcceptsGzipTest, ExplicitEntryBeatsWildcard) {
  // RFC 9110 §12.5.3: "*" matches codings not listed elsewhere in the field.
  EXPECT_TRUE(AcceptsGzip("*;q=0, gzip"));
  EXPECT_TRUE(AcceptsGzip("*;q=0, gzip;q=0.5"));
  EXPECT_FALSE(AcceptsGzip("*, gzip;q=0"));
  EXPECT_FALSE(AcceptsGzip("gzip;q=0, *"));
}

TEST(AcceptsGzipTest, RefusesOtherCodings) {
  EXPECT_FALSE(AcceptsGzip(""));
  EXPECT_FALSE(AcceptsGzip("   "));
  EXPECT_FALSE(AcceptsGzip("identity"));
  EXPECT_FALSE(AcceptsGzip("deflate, br"));
  EXPECT_FALSE(AcceptsGzip("gzipx"));
  EXPECT_FALSE(AcceptsGzip("xgzip"));
}

// ---- Request headers ----

TEST(RequestTest, HeaderWithoutLookupIsEmpty) {
  Request r;
  EXPECT_EQ(r.Header("Accept-Encoding"), "");
}

TEST(RequestTest, HeaderUsesBoundLookup) {
  struct Native {
    std::string value = "gzip";
  } native;
  Request r;
  r.BindHeaders(
      [](const void* n, std::string_view name) -> std::string_view {
        if (name == "Accept-Encoding") return static_cast<const Native*>(n)->value;
        return {};
      },
      &native);
  EXPECT_EQ(r.Header("Accept-Encoding"), "gzip");
  EXPECT_EQ(r.Header("Authorization"), "");
}

// ---- Responder ----

TEST(ResponderTest, SendDeliversOnce) {
  auto target = std::make_shared<CaptureTarget>();
  {
    Responder responder(target);
    EXPECT_FALSE(responder.sent());
    Response first;
    first.status = 201;
    first.body = "first";
    responder.Send(std::move(first));
    EXPECT_TRUE(responder.sent());
    Response second;
    second.status = 202;
    second.body = "second";
    responder.Send(std::move(second));
    EXPECT_TRUE(responder.sent());
  }
  EXPECT_EQ(target->deliveries, 1);
  EXPECT_EQ(target->last.status, 201);
  EXPECT_EQ(target->last.body, "first");
}

// Responder::Stream over a target that does not stream (the defaults): the head's body and
// the chunks are gathered and delivered once, at End or when the stream is dropped.
TEST(ResponderTest, StreamGathersPartsIntoOneDeliveryAtTheEnd) {
  auto target = std::make_shared<CaptureTarget>();
  {
    Responder responder(target);
    Response head;
    head.status = 200;
    head.content_type = "text/plain";
    head.body = "a";
    ResponseStream stream = responder.Stream(std::move(head));
    EXPECT_TRUE(responder.sent());  // the duty passed to the stream
    EXPECT_TRUE(stream.Write("b"));
    EXPECT_TRUE(stream.Write(""));
    EXPECT_TRUE(stream.Write("c"));
    EXPECT_EQ(target->deliveries, 0);
    ResponseStream moved = std::move(stream);
    EXPECT_TRUE(stream.ended());
    EXPECT_FALSE(moved.ended());
  }  // dropped unended: ended
  ASSERT_EQ(target->deliveries, 1);
  EXPECT_EQ(target->last.status, 200);
  EXPECT_EQ(target->last.content_type, "text/plain");
  EXPECT_EQ(target->last.body, "abc");
}

TEST(ResponderTest, StreamEndsOnceAndWritesAfterTheEndGoNowhere) {
  auto target = std::make_shared<CaptureTarget>();
  Responder responder(target);
  ResponseStream stream = responder.Stream(Response{});
  stream.End();
  stream.End();
  EXPECT_FALSE(stream.Write("late"));
  EXPECT_EQ(target->deliveries, 1);
  EXPECT_EQ(target->last.body, "");
}

TEST(ResponderTest, DroppedWithoutSendDelivers500) {
  auto target = std::make_shared<CaptureTarget>();
  { Responder responder(target); }
  ASSERT_EQ(target->deliveries, 1);
  EXPECT_EQ(target->last.status, 500);
  EXPECT_EQ(target->last.body, "no response");  // no error factory: plain text
}

// A made-up error shape, to see that the factory (not a hard-coded body) made it.
Response TestErrors(int status, std::string_view message) {
  return Response{status,
                  "application/x-test",
                  "E" + std::to_string(status) + ":" + std::string(message),
                  {},
                  false};
}

class FactoryTarget final : public ResponseTarget {
 public:
  FactoryTarget() : ResponseTarget(&TestErrors) {}
  void Deliver(Response response) override { last = std::move(response); }
  Response last;
};

// Issue 9 §4: the 500 of a Responder dropped unsent is built by the error factory the
// server is given (TorchServe's JSON in tserve), like every other error of the HTTP layer.
TEST(ResponderTest, DroppedWithoutSendUsesTheTargetsErrorFactory) {
  auto target = std::make_shared<FactoryTarget>();
  { Responder responder(target); }
  EXPECT_EQ(target->last.status, 500);
  EXPECT_EQ(target->last.content_type, "application/x-test");
  EXPECT_EQ(target->last.body, "E500:no response");
}

TEST(ResponderTest, KeepsTargetAlive) {
  auto target = std::make_shared<CaptureTarget>();
  std::weak_ptr<CaptureTarget> weak = target;
  Responder responder(std::move(target));
  EXPECT_FALSE(weak.expired());
  responder.Send(Response{});
  EXPECT_TRUE(weak.expired());  // released once sent
}

TEST(ResponderTest, MoveTransfersDuty) {
  auto target = std::make_shared<CaptureTarget>();
  {
    Responder a(target);
    Responder b(std::move(a));
    EXPECT_TRUE(a.sent());  // NOLINT(bugprone-use-after-move): moved-from is empty
    EXPECT_FALSE(b.sent());
    {
      Responder c;
      c = std::move(b);
      EXPECT_EQ(target->deliveries, 0);
    }  // c dropped unsent
    EXPECT_EQ(target->deliveries, 1);
  }  // a and b are empty: nothing more
  EXPECT_EQ(target->deliveries, 1);
  EXPECT_EQ(target->last.status, 500);
}

// Move-assigning over a responder that still owes a response must not lose that
// response (its client would hang). DISABLED: Responder's move assignment is
// `= default` in request.h, which drops the old target silently; see the report.
TEST(ResponderTest, MoveAssignOverUnsentDelivers500) {
  auto first = std::make_shared<CaptureTarget>();
  auto second = std::make_shared<CaptureTarget>();
  Responder a(first);
  Responder b(second);
  a = std::move(b);
  EXPECT_EQ(first->deliveries, 1);
  EXPECT_EQ(first->last.status, 500);
  EXPECT_EQ(second->deliveries, 0);
  a.Send(Response{});
  EXPECT_EQ(second->deliveries, 1);
  EXPECT_EQ(second->last.status, 200);
}

TEST(ResponderTest, DefaultIsInert) {
  Responder responder;
  EXPECT_TRUE(responder.sent());
  responder.Send(Response{});  // no target: nothing happens, no crash
}

TEST(ResponderTest, SendFromAnotherThread) {
  auto target = std::make_shared<CaptureTarget>();
  Responder responder(target);
  std::thread t([r = std::move(responder)]() mutable {
    Response resp;
    resp.status = 204;
    r.Send(std::move(resp));
  });
  t.join();
  EXPECT_EQ(target->deliveries, 1);
  EXPECT_EQ(target->last.status, 204);
}

TEST(RequestTest, ResponseDefaults) {
  Response r;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_TRUE(r.body.empty());
  EXPECT_TRUE(r.headers.empty());
  EXPECT_FALSE(r.close);
}

}  // namespace
}  // namespace tserve::http
