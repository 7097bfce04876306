import Dispatch

/// Splits `0 ..< count` into contiguous chunks run on all cores when the work is large enough
/// to pay for the dispatch; `work` is an estimate of scalar operations in total.
@inline(__always)
func parallelFor(_ count: Int, work: Int, _ body: (Range<Int>) -> Void) {
    let threads = ParallelConfig.threads
    if threads <= 1 || count <= 1 || work < 64_000 {
        body(0..<count)
        return
    }
    let chunks = min(count, threads * 4)
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
        let start = c * count / chunks
        let end = (c + 1) * count / chunks
        if start < end { body(start..<end) }
    }
}

/// The number of worker threads the CPU kernels use.
public enum ParallelConfig {
    nonisolated(unsafe) public static var threads: Int = {
        #if canImport(Glibc)
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        #else
        return 4
        #endif
    }()
}

#if canImport(Glibc)
import Glibc
#endif
