import LoRA
import LoomCore
import Testing
@testable import CUDABackend

/// Which shrink kernel a plan gets: decided from row counts, capacities and shapes alone (the GPU
/// op checks run each kernel; this pins the choice).
@Suite struct LoRAShrinkKernelTests {
    /// A plan of `rows` rows over `slots` slots, K = 4096, as `loraShrink` sees it.
    func shape(rows: Int, slots: Int, rank: Int = 32, kind: LoRABackendKind = .csgmv, chunk: Int = 16, k: Int = 4096) -> LoRAShrinkKernel.Shape {
        .init(rows: rows, capacity: BatchPlan.segmentCapacity(rows: rows, slots: slots, kind: kind, chunkSize: chunk),
              maxSegmentLength: BatchPlan.maxSegmentLength(rows: rows, kind: kind, chunkSize: chunk), maxRank: rank, k: k,
              outIsF32: true, isAligned16: true)
    }

    @Test func decodeOverManyAdaptersStreamsSegments() {
        // S-LoRA's workload: 106 to 160 rows over 128 slots of rank up to 64.
        #expect(LoRAShrinkKernel.choose(shape(rows: 160, slots: 64)) == .segments)
        #expect(LoRAShrinkKernel.choose(shape(rows: 106, slots: 128, rank: 64)) == .segments)
        // A pool of rank 8 or 24: 8-column tiles.
        #expect(LoRAShrinkKernel.choose(shape(rows: 160, slots: 64, rank: 8)) == .segments8)
        #expect(LoRAShrinkKernel.choose(shape(rows: 160, slots: 64, rank: 24)) == .segments8)
        // Switched off, or a rank off the 8-column grid: the MMA kernel.
        #expect(LoRAShrinkKernel.choose(shape(rows: 160, slots: 64), segmentsFrom: 0) == .mmaSmall)
        #expect(LoRAShrinkKernel.choose(shape(rows: 160, slots: 64, rank: 12)) == .mmaSmall)
    }

    @Test func fewAdaptersPrefillAndOddShapesKeepTheirKernels() {
        // 32 decode rows over 8 adapters: a capacity of 10 segments, unless the threshold is lowered.
        #expect(LoRAShrinkKernel.choose(shape(rows: 32, slots: 8)) == .mmaSmall)
        #expect(LoRAShrinkKernel.choose(shape(rows: 32, slots: 8), segmentsFrom: 8) == .segments)
        // A prefill in chunks of 16 (segments of 8 rows or more on average), and sgmv's long segments.
        #expect(LoRAShrinkKernel.choose(shape(rows: 2048, slots: 4)) == .mmaSmall)
        #expect(LoRAShrinkKernel.choose(shape(rows: 2048, slots: 4, kind: .sgmv)) == .mmaLarge)
        // More segments than a block's shared memory holds the unit counts of.
        #expect(LoRAShrinkKernel.choose(shape(rows: 8192, slots: 8192, chunk: 1)) == .mmaSmall)
        // K off the 8-element grid, or a bf16 out: the general kernel.
        #expect(LoRAShrinkKernel.choose(shape(rows: 160, slots: 64, k: 4100)) == .general)
        var bf16Out = shape(rows: 160, slots: 64)
        bf16Out.outIsF32 = false
        #expect(LoRAShrinkKernel.choose(bf16Out) == .general)
    }

    /// The tensor-core shrinks launch one block per compact row tile (`find_row_tile`): the count
    /// must cover every plan the bounds allow, or rows would go unshrunk.
    @Test func compactRowTilesCoverEveryPlanOfTheBounds() {
        func count(_ rows: Int, _ capacity: Int, _ longest: Int, _ tile: Int) -> Int {
            LoRAKernelPlan.compactRowTiles(rows: rows, capacity: capacity, maxSegmentLength: longest, tileRows: tile)
        }
        // A graph decode step of 256 rows over 8 slots, segments bounded at 256 rows: 23 tiles of 16,
        // where a grid of segments × the longest segment's tiles had 128. Seven one-row segments and
        // one of 249 rows take all 23.
        #expect(count(256, 8, 256, 16) == 23)
        let fullest = 7 + (249 + 15) / 16
        #expect(fullest == 23)
        // A prefill of 4 × 512 rows in its own 4 segments: 32 tiles of 64, as before.
        #expect(count(2048, 4, 512, 64) == 32)
        // csgmv's chunks: a segment is at most one tile.
        #expect(count(160, 74, 16, 16) == 74)
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let tile = [16, 64].randomElement(using: &generator)!
            let capacity = Int.random(in: 1...40, using: &generator), longest = Int.random(in: 1...300, using: &generator)
            // Random segments within the bounds (some empty), then the rows they add up to.
            let lengths = (0..<capacity).map { _ in Bool.random(using: &generator) ? 0 : Int.random(in: 1...longest, using: &generator) }
            let rows = lengths.reduce(0, +)
            let used = lengths.map { ($0 + tile - 1) / tile }.reduce(0, +)
            let launched = count(rows, capacity, longest, tile)
            #expect(used <= launched, "\(lengths) in tiles of \(tile)")
            #expect(launched <= max(1, capacity * ((longest + tile - 1) / tile)))
        }
    }
}
