import Foundation
import LoomCore

/// Collectives among threads of one process, one `CPUCommunicator` per rank. Every rank sums in
/// rank order, so all ranks hold bit-identical results.
public final class CPUCommunicator: Communicator {
    public let rank: Int
    public var size: Int { group.size }
    private let group: Group

    /// A group of `size` communicators; rank `r` must be driven by its own thread.
    public static func group(size: Int) -> [CPUCommunicator] {
        let group = Group(size: size)
        return (0..<size).map { CPUCommunicator(rank: $0, group: group) }
    }

    private init(rank: Int, group: Group) {
        self.rank = rank
        self.group = group
    }

    public func allReduceSum(_ tensor: DeviceTensor) {
        if size == 1 { return }
        let n = tensor.count
        group.publish(rank, tensor.f32)
        group.ensureScratch(n, rank: rank)
        group.barrier()
        let chunk = (n + size - 1) / size
        let lo = min(n, rank * chunk), hi = min(n, lo + chunk)
        let scratch = group.scratch
        for i in lo..<hi {
            var s: Float = 0
            for r in 0..<size { s += group.pointers[r]![i] }
            scratch[i] = s
        }
        group.barrier()
        tensor.f32.update(from: scratch, count: n)
        group.barrier()
    }

    public func allGather(_ x: DeviceTensor, out: DeviceTensor) {
        let rows = x.shape[0], cols = x.shape.rowCount, total = out.shape.rowCount
        group.publish(rank, x.f32)
        group.barrier()
        let dst = out.f32
        for r in 0..<size {
            let src = group.pointers[r]!
            let first = r * cols, width = max(0, min(cols, total - first))
            if width == 0 { continue }
            for i in 0..<rows { (dst + i * total + first).update(from: src + i * cols, count: width) }
        }
        group.barrier()
    }

    /// Shared state of a group: published pointers, a scratch buffer and a reusable barrier.
    final class Group: @unchecked Sendable {
        let size: Int
        var pointers: [UnsafeMutablePointer<Float>?]
        var scratch = UnsafeMutablePointer<Float>.allocate(capacity: 1)
        var scratchCount = 1
        private let condition = NSCondition()
        private var arrived = 0
        private var generation = 0

        init(size: Int) {
            self.size = size
            pointers = Array(repeating: nil, count: size)
        }

        deinit { scratch.deallocate() }

        func publish(_ rank: Int, _ pointer: UnsafeMutablePointer<Float>) {
            condition.withLock { pointers[rank] = pointer }
        }

        /// Rank 0 grows the scratch buffer before the barrier that precedes its use.
        func ensureScratch(_ n: Int, rank: Int) {
            guard rank == 0, n > scratchCount else { return }
            condition.withLock {
                scratch.deallocate()
                scratch = .allocate(capacity: n)
                scratchCount = n
            }
        }

        func barrier() {
            condition.lock()
            let current = generation
            arrived += 1
            if arrived == size {
                arrived = 0
                generation += 1
                condition.broadcast()
            } else {
                while generation == current { condition.wait() }
            }
            condition.unlock()
        }
    }
}
