// libtorch's own collective engine (c10d), which tch does not expose: a TCPStore rendezvous and a
// process group, gloo (CPU tensors) or NCCL (CUDA tensors), for data-parallel training
// (src/distributed.rs wraps each function).
//
// Headers: the torch wheel ships c10d's headers but not gloo's, which ProcessGroupGloo.hpp includes;
// they come from Debian's libgloo-dev (DDPM_GLOO, set by build.rs when /usr/include/gloo/context.h
// exists). That gloo is of another version than the wheel's, which is safe here because this file
// only holds gloo's classes through pointers (the process group's members are shared_ptr and
// unique_ptr of them) and calls no gloo function itself: every gloo call happens inside
// libtorch_cpu.so, against the wheel's own gloo (the tests of src/distributed.rs run it). NCCL (DDPM_NCCL) needs
// nccl.h (wheel nvidia-nccl-cu13) and the CUDA runtime's headers (nvidia-cuda-runtime, -crt, -cccl).
// Without a backend the functions say so through `err`.
#include <ATen/ATen.h>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DDPM_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef DDPM_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

void set_error(char* err, int len, const std::string& message) {
  if (err != nullptr && len > 0) {
    std::strncpy(err, message.c_str(), len - 1);
    err[len - 1] = '\0';
  }
}

template <typename F>
int guarded(char* err, int len, F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    set_error(err, len, e.what());
  } catch (...) {
    set_error(err, len, "unknown C++ exception");
  }
  return -1;
}

std::vector<at::Tensor> tensors_of(void** handles, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    out.push_back(*static_cast<at::Tensor*>(handles[i]));
  }
  return out;
}

// Starts `start` on each tensor (one collective each, all in flight), then waits for all of them.
template <typename F>
void each_then_wait(void** tensors, int n, F start) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (auto& t : tensors_of(tensors, n)) {
    std::vector<at::Tensor> one{t};
    works.push_back(start(one));
  }
  for (auto& w : works) {
    w->wait();
  }
}

}  // namespace

// Which backends this build has: bit 0 gloo, bit 1 NCCL.
extern "C" int ddpm_c10d_backends() {
  int b = 0;
#ifdef DDPM_GLOO
  b |= 1;
#endif
#ifdef DDPM_NCCL
  b |= 2;
#endif
  return b;
}

// Joins the group of `size` ranks as `rank`: rank 0 serves the TCPStore on host:port and waits for
// the others; every collective (and the rendezvous) fails after `timeout_ms`. `nccl` != 0: NCCL,
// else gloo. Returns the group, or null with the reason in `err`.
extern "C" void* ddpm_c10d_join(const char* host, int port, int rank, int size, int timeout_ms, int nccl,
                                char* err, int len) {
  Group* group = nullptr;
  int rc = guarded(err, len, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(port);
    o.isServer = rank == 0;
    o.numWorkers = size;
    o.waitWorkers = true;
    o.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), o);
    c10::intrusive_ptr<c10d::Backend> backend;
    if (nccl != 0) {
#ifdef DDPM_NCCL
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
#else
      throw std::runtime_error("this build of ddpm has no NCCL (its headers were missing when it was built)");
#endif
    } else {
#ifdef DDPM_GLOO
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      // Where this rank listens: loopback when the group meets on loopback (one machine); else the
      // interface GLOO_SOCKET_IFNAME names, or this machine's hostname (as torch.distributed does).
      std::string h(host);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (h == "localhost" || h.rfind("127.", 0) == 0) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(h));
      } else if (ifname != nullptr && ifname[0] != '\0') {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(std::string(ifname)));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
#else
      throw std::runtime_error(
          "this build of ddpm has no gloo (gloo's headers, Debian's libgloo-dev, were missing when it was built)");
#endif
    }
    group = new Group{store, backend};
  });
  return rc == 0 ? group : nullptr;
}

extern "C" void ddpm_c10d_free(void* group) { delete static_cast<Group*>(group); }

// All-reduces each tensor in place (op 0: sum, 1: max), all started before any is waited for (the
// backend's worker threads run them concurrently).
extern "C" int ddpm_c10d_allreduce(void* group, void** tensors, int n, int op, char* err, int len) {
  return guarded(err, len, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::AllreduceOptions opts;
    opts.reduceOp = op == 1 ? c10d::ReduceOp(c10d::ReduceOp::MAX) : c10d::ReduceOp(c10d::ReduceOp::SUM);
    each_then_wait(tensors, n, [&](std::vector<at::Tensor>& one) { return g->backend->allreduce(one, opts); });
  });
}

// Broadcasts each tensor from `root` in place.
extern "C" int ddpm_c10d_broadcast(void* group, void** tensors, int n, int root, char* err, int len) {
  return guarded(err, len, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    each_then_wait(tensors, n, [&](std::vector<at::Tensor>& one) { return g->backend->broadcast(one, opts); });
  });
}
