#include "http/router.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tserve::http {
namespace {

class CaptureTarget final : public ResponseTarget {
 public:
  void Deliver(Response response) override {
    ++deliveries;
    last = std::move(response);
  }
  int deliveries = 0;
  Response last;
};

// The router's ErrorFactory in these tests: the status, a marker type, the message as body.
Response TestError(int status, std::string_view message) {
  Response r;
  r.status = status;
  r.content_type = "test/error";
  r.body = std::string(message);
  return r;
}

constexpr const char* kNotFoundMessage =
    "Requested resource is not found, please refer to API document.";
constexpr const char* kNotAllowedMessage =
    "Requested method is not allowed, please refer to API document.";

// A router with TorchServe-like routes. Each handler answers 200 with its route's name as
// the body and records the path parameters it saw.
class RouterRoutesTest : public ::testing::Test {
 protected:
  RouterRoutesTest() : router_(&TestError) {
    AddRoute(Method::kGet, "/ping", "ping");
    AddRoute(Method::kPost, "/ping", "ping-post");
    AddRoute(Method::kPost, "/predictions/{model_name}", "predict");
    AddRoute(Method::kPost, "/predictions/{model_name}/{version}", "predict-version");
    AddRoute(Method::kGet, "/models", "list");
    AddRoute(Method::kPost, "/models", "register");
    AddRoute(Method::kGet, "/models/{name}", "describe");
    AddRoute(Method::kGet, "/models/{name}/{version}", "describe-version");
    AddRoute(Method::kPut, "/models/{name}/{version}/set-default", "set-default");
    AddRoute(Method::kDelete, "/models/{name}", "unregister");
  }

  void AddRoute(Method method, std::string_view pattern, std::string name) {
    router_.Add(method, pattern, [this, name](Request& req, Responder responder) {
      ++calls_;
      params_.assign(req.path_params.begin(), req.path_params.end());
      Response r;
      r.body = name;
      responder.Send(std::move(r));
    });
  }

  // Routes one request; returns what the client would receive.
  Response Dispatch(Method method, std::string path) {
    path_ = std::move(path);
    Request request;
    request.method = method;
    request.method_text = MethodName(method);
    request.target = path_;
    request.path = path_;
    auto target = std::make_shared<CaptureTarget>();
    router_.Handle(request, Responder(target));
    EXPECT_EQ(target->deliveries, 1) << path_;
    return target->last;
  }

  std::string Route(Method method, std::string path) {
    Response r = Dispatch(method, std::move(path));
    return r.status == 200 ? r.body : "<" + std::to_string(r.status) + ">";
  }

  Router router_;
  std::string path_;
  int calls_ = 0;
  std::vector<std::string> params_;
};

TEST_F(RouterRoutesTest, LiteralRoute) {
  Response r = Dispatch(Method::kGet, "/ping");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ping");
  EXPECT_TRUE(params_.empty());
  EXPECT_EQ(calls_, 1);
}

TEST_F(RouterRoutesTest, SamePathDispatchesByMethod) {
  EXPECT_EQ(Route(Method::kGet, "/ping"), "ping");
  EXPECT_EQ(Route(Method::kPost, "/ping"), "ping-post");
  EXPECT_EQ(Route(Method::kGet, "/models"), "list");
  EXPECT_EQ(Route(Method::kPost, "/models"), "register");
  EXPECT_EQ(Route(Method::kGet, "/models/resnet"), "describe");
  EXPECT_EQ(Route(Method::kDelete, "/models/resnet"), "unregister");
}

TEST_F(RouterRoutesTest, ParamsCaptured) {
  EXPECT_EQ(Route(Method::kPost, "/predictions/resnet18"), "predict");
  EXPECT_EQ(params_, (std::vector<std::string>{"resnet18"}));
  EXPECT_EQ(Route(Method::kPost, "/predictions/resnet18/2.0"), "predict-version");
  EXPECT_EQ(params_, (std::vector<std::string>{"resnet18", "2.0"}));
  EXPECT_EQ(Route(Method::kPut, "/models/m/1.0/set-default"), "set-default");
  EXPECT_EQ(params_, (std::vector<std::string>{"m", "1.0"}));
}

TEST_F(RouterRoutesTest, ParamsPointIntoThePath) {
  Request request;
  request.method = Method::kGet;
  std::string path = "/models/abc/def";
  request.path = path;
  auto target = std::make_shared<CaptureTarget>();
  router_.Handle(request, Responder(target));
  ASSERT_EQ(request.path_params.size(), 2u);
  EXPECT_EQ(request.path_params[0], "abc");
  EXPECT_EQ(request.path_params[1], "def");
  EXPECT_EQ(request.path_params[0].data(), path.data() + 8);
}

TEST_F(RouterRoutesTest, ParamMatchesOneNonEmptySegment) {
  EXPECT_EQ(Route(Method::kPost, "/predictions"), "<404>");
  EXPECT_EQ(Route(Method::kPost, "/predictions/"), "<404>");
  EXPECT_EQ(Route(Method::kPost, "/predictions/a/b/c"), "<404>");
  EXPECT_EQ(calls_, 0);
}

TEST_F(RouterRoutesTest, ParamTakesAnyCharacters) {
  EXPECT_EQ(Route(Method::kPost, "/predictions/my-model_v2.1"), "predict");
  EXPECT_EQ(params_, (std::vector<std::string>{"my-model_v2.1"}));
  // The router does not decode: the parameter is the segment as received.
  EXPECT_EQ(Route(Method::kPost, "/predictions/a%20b"), "predict");
  EXPECT_EQ(params_, (std::vector<std::string>{"a%20b"}));
  // A parameter may look like a literal of another route.
  EXPECT_EQ(Route(Method::kGet, "/models/models"), "describe");
  EXPECT_EQ(params_, (std::vector<std::string>{"models"}));
}

TEST_F(RouterRoutesTest, TrailingSlashIgnored) {
  EXPECT_EQ(Route(Method::kGet, "/ping/"), "ping");
  EXPECT_EQ(Route(Method::kGet, "/models/"), "list");
  EXPECT_EQ(Route(Method::kGet, "/models/resnet/"), "describe");
  EXPECT_EQ(params_, (std::vector<std::string>{"resnet"}));
  EXPECT_EQ(Route(Method::kGet, "/models/resnet//"), "describe");
}

TEST_F(RouterRoutesTest, DoubleSlashesCollapse) {
  EXPECT_EQ(Route(Method::kGet, "//ping"), "ping");
  EXPECT_EQ(Route(Method::kGet, "/models//resnet"), "describe");
  EXPECT_EQ(params_, (std::vector<std::string>{"resnet"}));
  EXPECT_EQ(Route(Method::kPost, "//predictions///m//2"), "predict-version");
  EXPECT_EQ(params_, (std::vector<std::string>{"m", "2"}));
}

TEST_F(RouterRoutesTest, LiteralsMatchWholeSegmentsCaseSensitively) {
  EXPECT_EQ(Route(Method::kGet, "/pin"), "<404>");
  EXPECT_EQ(Route(Method::kGet, "/pingx"), "<404>");
  EXPECT_EQ(Route(Method::kGet, "/PING"), "<404>");
  EXPECT_EQ(Route(Method::kGet, "/ping/extra"), "<404>");
  EXPECT_EQ(Route(Method::kGet, "/x/ping"), "<404>");
  EXPECT_EQ(Route(Method::kPut, "/models/m/1.0/set-defaults"), "<404>");
  EXPECT_EQ(calls_, 0);
}

TEST_F(RouterRoutesTest, UnknownPathIs404ThroughErrorFactory) {
  Response r = Dispatch(Method::kGet, "/nope");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.content_type, "test/error");
  EXPECT_EQ(r.body, kNotFoundMessage);
  EXPECT_EQ(Route(Method::kGet, "/"), "<404>");
  EXPECT_EQ(Route(Method::kGet, ""), "<404>");
  EXPECT_EQ(Route(Method::kOptions, "*"), "<404>");
  EXPECT_EQ(calls_, 0);
}

TEST_F(RouterRoutesTest, KnownPathWrongMethodIs405ThroughErrorFactory) {
  Response r = Dispatch(Method::kDelete, "/ping");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.content_type, "test/error");
  EXPECT_EQ(r.body, kNotAllowedMessage);
  EXPECT_EQ(Route(Method::kGet, "/predictions/m"), "<405>");
  EXPECT_EQ(Route(Method::kPut, "/models"), "<405>");
  EXPECT_EQ(Route(Method::kPost, "/models/m/1.0/set-default"), "<405>");
  EXPECT_EQ(Route(Method::kOther, "/ping"), "<405>");
  EXPECT_EQ(Route(Method::kPatch, "/models/m"), "<405>");
  EXPECT_EQ(calls_, 0);
}

TEST_F(RouterRoutesTest, GetRoutesAnswerHead) {
  EXPECT_EQ(Route(Method::kHead, "/ping"), "ping");
  EXPECT_EQ(Route(Method::kHead, "/models/resnet/1.0"), "describe-version");
  EXPECT_EQ(params_, (std::vector<std::string>{"resnet", "1.0"}));
}

TEST_F(RouterRoutesTest, HeadDoesNotReachNonGetRoutes) {
  EXPECT_EQ(Route(Method::kHead, "/predictions/m"), "<405>");
  EXPECT_EQ(Route(Method::kHead, "/models/m/1.0/set-default"), "<405>");
  EXPECT_EQ(calls_, 0);
}

TEST(RouterTest, EmptyRouterAnswers404) {
  Router router(&TestError);
  Request request;
  request.method = Method::kGet;
  request.path = "/metrics";
  auto target = std::make_shared<CaptureTarget>();
  router.Handle(request, Responder(target));
  ASSERT_EQ(target->deliveries, 1);
  EXPECT_EQ(target->last.status, 404);
}

TEST(RouterTest, RootRoute) {
  Router router(&TestError);
  int calls = 0;
  router.Add(Method::kGet, "/", [&](Request&, Responder r) {
    ++calls;
    r.Send(Response{});
  });
  for (const char* path : {"/", "//", ""}) {
    Request request;
    request.method = Method::kGet;
    request.path = path;
    auto target = std::make_shared<CaptureTarget>();
    router.Handle(request, Responder(target));
    EXPECT_EQ(target->last.status, 200) << path;
  }
  EXPECT_EQ(calls, 3);
}

TEST(RouterTest, PatternSlashesAreNotSignificant) {
  Router router(&TestError);
  router.Add(Method::kGet, "/a/b/", [](Request&, Responder r) { r.Send(Response{}); });
  router.Add(Method::kGet, "/c//{x}", [](Request&, Responder r) { r.Send(Response{}); });
  for (const char* path : {"/a/b", "/a/b/", "/c/1"}) {
    Request request;
    request.method = Method::kGet;
    request.path = path;
    auto target = std::make_shared<CaptureTarget>();
    router.Handle(request, Responder(target));
    EXPECT_EQ(target->last.status, 200) << path;
  }
}

TEST(RouterTest, FirstRegisteredMatchWins) {
  Router router(&TestError);
  std::string hit;
  router.Add(Method::kGet, "/models/all", [&](Request&, Responder r) {
    hit = "literal";
    r.Send(Response{});
  });
  router.Add(Method::kGet, "/models/{name}", [&](Request&, Responder r) {
    hit = "param";
    r.Send(Response{});
  });
  Request request;
  request.method = Method::kGet;
  request.path = "/models/all";
  router.Handle(request, Responder(std::make_shared<CaptureTarget>()));
  EXPECT_EQ(hit, "literal");
  request.path = "/models/other";
  router.Handle(request, Responder(std::make_shared<CaptureTarget>()));
  EXPECT_EQ(hit, "param");
}

TEST(RouterTest, MethodMismatchOnOneRouteStillFindsAnotherMatchingRoute) {
  Router router(&TestError);
  std::string hit;
  // A POST route on a parameter pattern listed before a GET route on a literal.
  router.Add(Method::kPost, "/x/{p}", [&](Request&, Responder r) {
    hit = "post";
    r.Send(Response{});
  });
  router.Add(Method::kGet, "/x/lit", [&](Request& req, Responder r) {
    hit = "get";
    EXPECT_TRUE(req.path_params.empty());
    r.Send(Response{});
  });
  Request request;
  request.method = Method::kGet;
  request.path = "/x/lit";
  auto target = std::make_shared<CaptureTarget>();
  router.Handle(request, Responder(target));
  EXPECT_EQ(hit, "get");
  EXPECT_EQ(target->last.status, 200);
}

TEST(RouterTest, HandlerThatDoesNotAnswerYields500) {
  Router router(&TestError);
  router.Add(Method::kGet, "/forgetful", [](Request&, Responder) {});
  Request request;
  request.method = Method::kGet;
  request.path = "/forgetful";
  auto target = std::make_shared<CaptureTarget>();
  router.Handle(request, Responder(target));
  ASSERT_EQ(target->deliveries, 1);
  EXPECT_EQ(target->last.status, 500);
}

TEST(RouterTest, HandlerMayAnswerLater) {
  Router router(&TestError);
  Responder saved;
  router.Add(Method::kGet, "/async", [&](Request&, Responder r) { saved = std::move(r); });
  Request request;
  request.method = Method::kGet;
  request.path = "/async";
  auto target = std::make_shared<CaptureTarget>();
  router.Handle(request, Responder(target));
  EXPECT_EQ(target->deliveries, 0);
  Response r;
  r.status = 202;
  saved.Send(std::move(r));
  EXPECT_EQ(target->deliveries, 1);
  EXPECT_EQ(target->last.status, 202);
}

}  // namespace
}  // namespace tserve::http
