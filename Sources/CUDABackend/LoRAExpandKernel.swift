import LoomCore

/// The CUDA expand kernels, and which one a plan gets. The choice depends only on the batch's row
/// count, the plan's capacities and the pool's shapes, never on the adapters in the plan, so a CUDA
/// graph captured for a batch size replays with any mix.
enum LoRAExpandKernel: String, Equatable, CaseIterable {
    /// Any shape, f32 or bf16 shrunk: one thread per output column.
    case general = "loom_lora_expand"
    /// Tensor cores, one block per (segment, 16-row tile, column stretch).
    case mmaSmall = "loom_lora_expand_mma_small"
    /// The same with 64-row tiles (long segments: prefill, sgmv).
    case mmaLarge = "loom_lora_expand_mma_large"
    /// Segments of 8 rows or more on average (a prefill's chunks): B streamed with 16-byte loads.
    case stream = "loom_lora_expand_stream"
    /// Many short segments (decode over many adapters): 128-column blocks walk groups of eight
    /// segments with the next one's loads in flight. On the H200 at 160 rows over 64 adapters of
    /// rank 32 a layer's LoRA took 184.5 µs against 295.2 with `mmaSmall`; with a capacity of 10
    /// segments (32 rows, 8 adapters) it took 60.8 against 38.9, too few blocks: hence 32 segments.
    case segments = "loom_lora_expand_segments"

    /// What the choice looks at.
    struct Shape {
        var rows, capacity, maxSegmentLength, maxRank, totalOut: Int
        var outOffsets: [Int]
        var shrunkIsF32: Bool
        /// B and shrunk 16-byte aligned; out 4-byte aligned.
        var isAligned16, isOutAligned4: Bool

        var usesLargeTiles: Bool { LoRAKernelPlan.usesLargeTiles(rows: rows, capacity: capacity, maxSegmentLength: maxSegmentLength) }
    }

    static func choose(_ s: Shape, stream streamOn: Bool = true, segments segmentsOn: Bool = true) -> LoRAExpandKernel {
        guard s.shrunkIsF32 && s.maxRank % 2 == 0 && s.outOffsets.allSatisfy({ $0 % 8 == 0 }) && s.isOutAligned4 else { return .general }
        if s.usesLargeTiles { return .mmaLarge }
        let sixteenByteRows = s.maxRank % 8 == 0 && s.isAligned16
        if streamOn && sixteenByteRows && s.rows >= 8 * s.capacity { return .stream }
        if segmentsOn && sixteenByteRows && s.capacity >= 32 && s.maxSegmentLength <= 16 && s.maxRank <= 64
            && s.totalOut % 128 == 0 && s.outOffsets.allSatisfy({ $0 % 128 == 0 }) {
            return .segments
        }
        return .mmaSmall
    }
}
