import LoomCore

/// The CUDA shrink kernels (f32 out), and which one a plan gets. Like `LoRAExpandKernel`, the choice
/// depends only on the batch's row count, the plan's capacities and the pool's shapes, so a CUDA
/// graph captured for a batch size replays with any mix of adapters.
enum LoRAShrinkKernel: String, Equatable, CaseIterable {
    /// Any K, f32 or bf16 out: one block per plan position and module.
    case general = "loom_lora_shrink"
    /// Tensor cores, one block per (segment, 16-row tile, 16-column tile, K slice).
    case mmaSmall = "loom_lora_shrink_mma_small"
    /// The same with 64-row × 32-column tiles (long segments: prefill, sgmv).
    case mmaLarge = "loom_lora_shrink_mma_large"
    /// Many short segments (decode over many adapters): every warp of a fixed grid takes an equal
    /// stretch of the (segment, 16-column tile, K step) list, four steps of loads in flight.
    case segments = "loom_lora_shrink_segments"
    /// The same with 8-column tiles, for pools whose rank is a multiple of 8 but not of 16.
    case segments8 = "loom_lora_shrink_segments8"

    /// The most segments `segments` takes: its blocks hold the plan's unit counts in shared memory.
    static let maxSegmentsCapacity = 4096

    /// What the choice looks at.
    struct Shape {
        var rows, capacity, maxSegmentLength, maxRank, k: Int
        var outIsF32: Bool
        /// x and A 16-byte aligned.
        var isAligned16: Bool

        var usesLargeTiles: Bool { LoRAKernelPlan.usesLargeTiles(rows: rows, capacity: capacity, maxSegmentLength: maxSegmentLength) }
    }

    /// - Parameter minCapacity: the fewest segments a plan needs for `segments` (0: never).
    static func choose(_ s: Shape, segmentsFrom minCapacity: Int = 32) -> LoRAShrinkKernel {
        guard s.outIsF32 && s.k % 8 == 0 && s.isAligned16 else { return .general }
        if s.usesLargeTiles { return .mmaLarge }
        // Decode-like plans (segments averaging under 8 rows) of 32 segments or more.
        if minCapacity > 0 && s.capacity >= minCapacity && s.capacity <= maxSegmentsCapacity && s.maxSegmentLength <= 16 && s.rows < 8 * s.capacity
            && s.maxRank % 8 == 0 {
            return s.maxRank % 16 == 0 ? .segments : .segments8
        }
        return .mmaSmall
    }
}
