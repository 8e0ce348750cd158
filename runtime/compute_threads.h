// The threads on which a worker runs its models, shared by every model it holds: one per slot
// of the device (the spec's device_concurrency). A model's execution threads batch and schedule;
// they hand each execution to these threads and wait for it.
//
// Why not run the model on the execution thread itself: libtorch's CPU operators use OpenMP, and
// libgomp gives every thread that starts a parallel region a team of its own (intra-op threads
// minus one helpers). When the helpers of all teams outnumber the CPUs, libgomp stops letting
// idle helpers spin and puts them to sleep after each region, and every region then pays for
// waking them: with a team per model instance and one for loading, a 2-core worker ran
// ResNet-18 at the speed of one thread (scripts/bench runtime: 18.8 images/s against 32.5
// direct). With the teams limited to the slots, the helpers stay within the CPUs.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace outpost::runtime {

class ComputeThreads {
 public:
  explicit ComputeThreads(int count);
  ~ComputeThreads();
  ComputeThreads(const ComputeThreads&) = delete;
  ComputeThreads& operator=(const ComputeThreads&) = delete;

  // Runs `task` on one of the threads and returns when it has finished; an exception it throws
  // is thrown here. A caller holds a slot of the device (FairScheduler), so a thread is free.
  void run(const std::function<void()>& task);

 private:
  struct Pending;
  void loop();

  std::mutex mutex_;
  std::condition_variable queued_;
  std::deque<Pending*> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace outpost::runtime
