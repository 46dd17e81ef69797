# When the native kernels let go of the GIL.
#
# Releasing the GIL around a few microseconds of work is a loss on a busy server: the release
# wakes another thread (gRPC's poller, a handler, the aggregator), and getting the GIL back
# means waiting until that thread gives it up, a context switch each way. A per-request
# batch of a few rows is far below the cost of that round trip, so the batch kernels keep
# the GIL for batches smaller than this many values and release it for larger ones, where
# other threads get real time to run while the kernel works (16,384 values are ~50 us of
# input statistics).
cdef enum:
    NOGIL_MIN_VALUES = 16384
