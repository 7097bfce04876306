import LoomCore
import Models

/// Fused prefill shrinks as batched GEMMs (`LoRABatchedShrink`): each run of an adapter's rows
/// against its own slot's A only, laid out and uploaded by `prepare` for steps that no graph replays.
extension LoRAManager {
    /// Each rank's batched shrinks by layer and group for a step that no graph replays, with their
    /// pointers uploaded (empty where the backend does not run them, or a run or group does not fit:
    /// `batchedShrinkLayout`). Steps with a run shorter than an instance (decode) return before any
    /// layout is made.
    func batchedShrinks(rowSlots: [Int], slotRanks: [Int32], consumes: Bool, usedSlots: Int) throws
        -> [[[ProjectionGroup: LoRABatchedShrink]]] {
        guard ranks.allSatisfy({ $0.backend.runsBatchedShrinks }) else { return [] }
        let runs = LoRARowRun.runs(of: rowSlots.map(Int32.init), slotRanks: slotRanks), n = rowSlots.count
        guard !runs.isEmpty, runs.allSatisfy({ $0.count >= options.batchedShrinkRows }) else { return [] }
        var all: [[[ProjectionGroup: LoRABatchedShrink]]] = []
        for rank in 0..<ranks.count {
            all.append(try batchedShrinks(rank: rank, runs: runs, slotRanks: slotRanks, rows: n, consumes: consumes, usedSlots: usedSlots))
        }
        return all
    }

    /// One layer's and group's layout: where its addresses start among the rank's, and its calls.
    struct BatchedLayout {
        var first, instances, rows, k, stride: Int
        var calls: [LoRABatchedShrink.Call]
    }

    /// One rank's: every layer's and group's layout, their addresses uploaded into the rank's buffer.
    func batchedShrinks(rank: Int, runs: [LoRARowRun], slotRanks: [Int32], rows n: Int, consumes: Bool, usedSlots: Int) throws
        -> [[ProjectionGroup: LoRABatchedShrink]] {
        let rb = ranks[rank], r = max(maxRank, 1)
        var values: [UInt64] = []
        var layouts: [[ProjectionGroup: BatchedLayout]] = []
        for layer in 0..<base.numLayers {
            var byGroup: [ProjectionGroup: BatchedLayout] = [:]
            for g in rb.fusedInputs.keys where !consumes || !consumerGroups.contains(g) {
                guard let buf = rb.layers[layer][g], let copies = fusedInputCopies(rank: rank, group: g, rows: n, usedSlots: usedSlots),
                      buf.a.dtype == copies.dtype, let a = rb.backend.deviceAddress(of: buf.a), let input = rb.backend.deviceAddress(of: copies)
                else { continue }
                let k = buf.a.shape[2], stride = copies.shape[2]
                guard let layout = Self.batchedShrinkLayout(
                    runs: runs, rows: options.batchedShrinkRows, slotRanks: slotRanks, scalings: slotScalings[layer][g]!,
                    stack: Self.modules(of: g).count, rank: r, k: k,
                    rowStride: stride, moduleStride: copies.shape[0] > 1 ? copies.shape[1] * stride : 0,
                    a: a, input: input, elementBytes: copies.dtype.byteCount) else { continue }
                byGroup[g] = BatchedLayout(first: values.count, instances: layout.pointers.count / 3, rows: layout.rows, k: k, stride: stride,
                                           calls: layout.calls)
                values += layout.pointers
            }
            layouts.append(byGroup)
        }
        if values.isEmpty { return layouts.map { _ in [:] } }
        // Freeing a smaller buffer waits for the launches that read it.
        if (batchedPointers[rank]?.count ?? 0) < 2 * values.count {
            batchedPointers[rank] = try rb.backend.allocate(Shape(4 * values.count), dtype: .i32)
        }
        let buffer = batchedPointers[rank]!
        // Each group's A addresses, then x's, then out's, 64 bits each as two i32 (little-endian).
        uploads[rank].copy(values.flatMap { [Int32(truncatingIfNeeded: $0), Int32(truncatingIfNeeded: $0 >> 32)] }, to: buffer, on: rb.backend)
        return layouts.map { byGroup in
            byGroup.mapValues { l in
                LoRABatchedShrink(instances: l.instances, rows: l.rows, k: l.k, rowStride: l.stride, calls: l.calls,
                                  pointers: buffer.rows(2 * l.first, 6 * l.instances))
            }
        }
    }

    /// A fused shrink (`ComputeBackend.loraShrinkFused`) as batched products of `rows` rows of x
    /// (`LoRAOptions.batchedShrinkRows`) against one slot's A (A and x of one dtype, `elementBytes`
    /// an element): the instances' A, x and out addresses (all A's, then all x's, then all out's) and
    /// the calls, grouped by width and scaling. An instance covers a slot's whole width (every
    /// module) where its rank is the pool's and its modules share one scaling, else one module (its
    /// rank's columns; modules the adapter leaves alone, scaling 0, are left zero). A run longer
    /// than a multiple of the rows ends with an instance that overlaps the one before. Nil where a
    /// run is shorter than that, the widths are not whole 16-byte pieces, or the calls would be more
    /// than 4 (the dense form then costs less).
    public static func batchedShrinkLayout(runs: [LoRARowRun], rows chunk: Int, slotRanks: [Int32], scalings: [Float], stack: Int, rank R: Int,
                                           k: Int, rowStride: Int, moduleStride: Int, a: UInt64, input: UInt64, elementBytes e: Int)
        -> (pointers: [UInt64], rows: Int, calls: [LoRABatchedShrink.Call])? {
        let split = moduleStride > 0
        guard chunk > 0, !runs.isEmpty, runs.allSatisfy({ $0.count >= chunk }), (k | rowStride | R | moduleStride) % 8 == 0, (a | input) % 16 == 0 else { return nil }
        struct Instance { var a, x, out: UInt64; var columns: Int; var scaling: Float }
        var instances: [Instance] = []
        for run in runs {
            let rank = Int(slotRanks[run.slot]), scales = scalings[(run.slot * stack)..<((run.slot + 1) * stack)]
            let whole = !split && rank == R && Set(scales).count == 1 && scales.first != 0
            let modules: [(m: Int, columns: Int)] = whole ? [(0, stack * R)] : (0..<stack).filter { scales[run.slot * stack + $0] != 0 }.map { ($0, rank) }
            for (m, columns) in modules where columns > 0 {
                let column = split ? run.slot * R : (run.slot * stack + m) * R
                for start in stride(from: 0, to: run.count, by: chunk) {
                    let row = run.row + min(start, run.count - chunk)
                    instances.append(Instance(a: a + UInt64(((run.slot * stack + m) * R) * k * e),
                                              x: input + UInt64(row * rowStride * e),
                                              out: input + UInt64((m * moduleStride + row * rowStride + k + column) * e),
                                              columns: columns, scaling: scales[run.slot * stack + m]))
                }
            }
        }
        let keys = Array(Set(instances.map { "\($0.columns) \($0.scaling.bitPattern)" })).sorted()
        guard !instances.isEmpty, keys.count <= 4 else { return nil }
        var ordered: [Instance] = [], calls: [LoRABatchedShrink.Call] = []
        for key in keys {
            let group = instances.filter { "\($0.columns) \($0.scaling.bitPattern)" == key }
            calls.append(.init(first: ordered.count, count: group.count, columns: group[0].columns, scaling: group[0].scaling))
            ordered += group
        }
        return (ordered.map(\.a) + ordered.map(\.x) + ordered.map(\.out), chunk, calls)
    }
}
