#pragma once

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace tserve {

// A callable that may own move-only state (an http::Responder, a promise, a unique_ptr):
// std::function requires copyable targets and C++23's std::move_only_function is not in
// GCC 12. Move-only itself. Calling an empty one prints a message and aborts (never UB).
//
//   MoveOnlyFunction<void(int)> done = [r = std::move(responder)](int n) mutable { ... };
//   done(3);
//
// Thread safety: as the callable it holds; one object is called by one thread at a time.
template <typename Signature>
class MoveOnlyFunction;

template <typename R, typename... Args>
class MoveOnlyFunction<R(Args...)> {
 public:
  MoveOnlyFunction() = default;
  MoveOnlyFunction(std::nullptr_t) {}  // NOLINT: implicit, as std::function
  template <typename F, typename D = std::decay_t<F>,
            typename = std::enable_if_t<!std::is_same_v<D, MoveOnlyFunction> &&
                                        std::is_invocable_r_v<R, D&, Args...>>>
  MoveOnlyFunction(F&& f)  // NOLINT: implicit, as std::function
      : impl_(std::make_unique<Impl<D>>(std::forward<F>(f))) {}

  MoveOnlyFunction(MoveOnlyFunction&&) noexcept = default;
  MoveOnlyFunction& operator=(MoveOnlyFunction&&) noexcept = default;
  MoveOnlyFunction(const MoveOnlyFunction&) = delete;
  MoveOnlyFunction& operator=(const MoveOnlyFunction&) = delete;

  explicit operator bool() const { return impl_ != nullptr; }

  R operator()(Args... args) {
    if (impl_ == nullptr) {
      std::fputs("tserve: fatal: an empty MoveOnlyFunction was called\n", stderr);
      std::abort();
    }
    return impl_->Call(std::forward<Args>(args)...);
  }

 private:
  struct Base {
    virtual ~Base() = default;
    virtual R Call(Args&&... args) = 0;
  };
  template <typename F>
  struct Impl final : Base {
    template <typename G>
    explicit Impl(G&& g) : f(std::forward<G>(g)) {}
    R Call(Args&&... args) override { return std::invoke(f, std::forward<Args>(args)...); }
    F f;
  };

  std::unique_ptr<Base> impl_;
};

}  // namespace tserve
