import LoRA
import LoomCore
import Testing
@testable import CUDABackend

/// Which expand kernel a plan gets: decided from row counts, capacities and shapes alone (the GPU
/// op checks run each kernel; this pins the choice the benchmarks measured).
@Suite struct LoRAExpandKernelTests {
    /// A csgmv plan of `rows` rows over `slots` slots for Llama-3.1-8B's q/k/v, as `loraExpand` sees it.
    func shape(rows: Int, slots: Int, rank: Int = 32, kind: LoRABackendKind = .csgmv, chunk: Int = 16,
               outputs: [Int] = [4096, 1024, 1024]) -> LoRAExpandKernel.Shape {
        let capacity = BatchPlan.segmentCapacity(rows: rows, slots: slots, kind: kind, chunkSize: chunk)
        let maxLength = BatchPlan.maxSegmentLength(rows: rows, kind: kind, chunkSize: chunk)
        let offsets = outputs.reduce(into: [0]) { $0.append($0.last! + $1) }
        return .init(rows: rows, capacity: capacity, maxSegmentLength: maxLength, maxRank: rank, totalOut: offsets.last!,
                     outOffsets: offsets, shrunkIsF32: true,
                     isAligned16: true, isOutAligned4: true)
    }

    @Test func decodeOverManyAdaptersWalksSegments() {
        // S-LoRA's workload: 160 decode rows, 64 or 128 adapters.
        #expect(LoRAExpandKernel.choose(shape(rows: 160, slots: 64)) == .segments)
        #expect(LoRAExpandKernel.choose(shape(rows: 160, slots: 128, rank: 64)) == .segments)
        // Switched off, or a rank the kernel does not hold in registers: the MMA kernel.
        #expect(LoRAExpandKernel.choose(shape(rows: 160, slots: 64), segments: false) == .mmaSmall)
        #expect(LoRAExpandKernel.choose(shape(rows: 160, slots: 64, rank: 128)) == .mmaSmall)
        // Module offsets off the 128-column grid (a tiny model): the MMA kernel.
        #expect(LoRAExpandKernel.choose(shape(rows: 160, slots: 64, outputs: [192, 96, 96])) == .mmaSmall)
    }

    @Test func fewAdaptersAndPrefillKeepTheirKernels() {
        // 32 decode rows over 8 adapters: a capacity of 10 segments, too few for the segment walk.
        #expect(LoRAExpandKernel.choose(shape(rows: 32, slots: 8)) == .mmaSmall)
        // A prefill of 4 × 512 rows in chunks of 16: streamed.
        #expect(LoRAExpandKernel.choose(shape(rows: 2048, slots: 4)) == .stream)
        // Streaming off: its 132 chunk segments of 16 rows fall to the segment walk, or with that off too the MMA kernel.
        #expect(LoRAExpandKernel.choose(shape(rows: 2048, slots: 4), stream: false) == .segments)
        #expect(LoRAExpandKernel.choose(shape(rows: 2048, slots: 4), stream: false, segments: false) == .mmaSmall)
        // sgmv's whole-adapter segments: 64-row tiles.
        #expect(LoRAExpandKernel.choose(shape(rows: 2048, slots: 4, kind: .sgmv)) == .mmaLarge)
        // An odd pool rank or a bf16 shrink result: the general kernel.
        #expect(LoRAExpandKernel.choose(shape(rows: 160, slots: 64, rank: 5)) == .general)
        var bf16 = shape(rows: 160, slots: 64)
        bf16.shrunkIsF32 = false
        #expect(LoRAExpandKernel.choose(bf16) == .general)
    }

    @Test func everyKernelIsCompiled() {
        let compiled = Set(KernelLibrary.modules.flatMap(\.functions))
        #expect(LoRAExpandKernel.allCases.allSatisfy { compiled.contains($0.rawValue) })
    }
}
