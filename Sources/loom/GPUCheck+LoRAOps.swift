import CPUBackend
import CUDABackend
import Foundation
import LoomCore
import LoRA

/// The LoRA kernels against the CPU backend: adapter mixes, ranks, plan kinds and graph replay.
extension OpChecks {
    /// One LoRA case: `rowSlots[i]` is token row i's slot; slot s has rank `slotRanks[s]` (0: base) in a
    /// pool of rank `maxRank`; modules of `moduleOutputs` stacked over input width `k`. Shrink and
    /// expand run on both backends over the same plan (BatchPlan of `kind`, padded to its capacity);
    /// expand gets the same bf16 shrink result on both, NaN where j >= rank (never read). With
    /// `captureRowSlots`, the GPU ops are captured in a CUDA graph on that plan first and replayed on
    /// this one.
    mutating func loraCase(_ label: String, k: Int, moduleOutputs: [Int], maxRank: Int, slotRanks: [Int], rowSlots: [Int],
                           kind: LoRABackendKind, chunk: Int = 16, shrunkDType: DType = .f32, captureRowSlots: [Int]? = nil) -> [[String: Any]] {
        let n = rowSlots.count, stack = moduleOutputs.count, slots = slotRanks.count
        let outs = moduleOutputs.reduce(into: [0]) { $0.append($0.last! + $1) }, totalOut = outs.last!
        let capacity = BatchPlan.segmentCapacity(rows: n, slots: slots, kind: kind, chunkSize: chunk)
        let maxLength = BatchPlan.maxSegmentLength(rows: n, kind: kind, chunkSize: chunk)
        let gpu = self.gpu, cpu = self.cpu
        let (xc, xg, _) = pair(Shape(n, k))
        let (ac, ag, _) = pair(Shape(slots, stack * maxRank, k), scale: 0.05)
        let (bc, bg, _) = pair(Shape(slots, totalOut, maxRank), scale: 0.1)
        let (rc, rg) = ints(slotRanks.map(Int32.init))
        let (scaleC, scaleG) = floats32((0..<(slots * stack)).map { Float($0 % 5 + 1) * 0.25 })
        let (permC, permG) = ints([Int32](repeating: 0, count: n))
        let (startC, startG) = ints([Int32](repeating: 0, count: capacity + 1))
        let (slotC, slotG) = ints([Int32](repeating: 0, count: capacity))
        func load(_ rowSlots: [Int]) -> (LoRAKernelPlan, LoRAKernelPlan, BatchPlan) {
            let plan = BatchPlan(rowSlots: rowSlots, kind: kind, chunkSize: chunk)
            let padded = plan.padded(toCapacity: capacity)
            for (backend, perm, start, slot) in [(cpu as ComputeBackend, permC, startC, slotC), (gpu, permG, startG, slotG)] {
                backend.copy(plan.permutation, to: perm)
                backend.copy(padded.starts, to: start)
                backend.copy(padded.slots, to: slot)
            }
            func make(_ perm: DeviceTensor, _ start: DeviceTensor, _ slot: DeviceTensor, _ ranks: DeviceTensor) -> LoRAKernelPlan {
                LoRAKernelPlan(permutation: perm, segmentStarts: start, segmentSlots: slot, slotRanks: ranks, numSegments: plan.segmentCount,
                               maxRank: slotRanks.max()!, segmentCapacity: capacity, maxSegmentLength: maxLength)
            }
            return (make(permC, startC, slotC, rc), make(permG, startG, slotG, rg), plan)
        }
        let (planC, loadedG, plan) = load(rowSlots)
        var planG = loadedG
        // An eager step's plan bounds its adapted slots from below (the dense fused shrink skips lower slots).
        if captureRowSlots == nil { planG.firstAdaptedSlot = rowSlots.filter { slotRanks[$0] > 0 }.min() ?? 0 }
        // Shrink outputs start at zero on both; entries at j >= rank stay untouched on both.
        let (sc, sg) = zeros(Shape(n, stack * maxRank), gpuDType: shrunkDType)
        // Expand input: the same bf16 values on both, NaN where a row's slot rank ends.
        var yValues = [Float](repeating: 0, count: n * stack * maxRank)
        for p in 0..<n {
            let rank = slotRanks[rowSlots[Int(plan.permutation[p])]]
            for m in 0..<stack {
                for j in 0..<maxRank {
                    yValues[(p * stack + m) * maxRank + j] = j < rank ? HalfConversion.bf16ToFloat(HalfConversion.floatToBF16(rng.uniform())) : .nan
                }
            }
        }
        let yc = try! cpu.allocate(Shape(n, stack * maxRank), dtype: .f32), yg = try! gpu.allocate(Shape(n, stack * maxRank), dtype: shrunkDType)
        cpu.copy(yValues, to: yc)
        gpu.copy(yValues, to: yg)
        let (oc, og, _) = pair(Shape(n, totalOut))
        // The fused shrink, where its K fits: x in the wide input's first K columns (the model's ops
        // write it there), the scaled x·Aᵀ beside it. Fused steps on the widened K (prefill) plan one
        // segment per slot, as sgmv does, so sgmv's cases run it too.
        let fused = (kind == .fused || kind == .sgmv) && k % 8 == 0
        let fusedWidth = k + LoRAManager.fusedExtension(slots: slots, stack: stack, rank: maxRank)
        let (fc, fg) = zeros(Shape(n, fused ? fusedWidth : 8))
        func placeX() {
            gpu.zero(fg)
            if fused { gpu.copyColumns(xg, into: fg, column: 0) }
        }
        placeX()
        if fused { cpu.copyColumns(xc, into: fc, column: 0) }
        let (scratchC, scratchG) = zeros(Shape(n * stack * maxRank), gpuDType: .f32)
        let gpuOps = {
            gpu.loraShrink(xg, a: ag, out: sg, plan: planG, stack: stack)
            gpu.loraExpand(yg, b: bg, out: og, plan: planG, scalings: scaleG, outOffsets: outs)
            if fused { gpu.loraShrinkFused(fg, a: ag, scalings: scaleG, plan: planG, stack: stack, scratch: scratchG) }
        }
        // `ops` on this plan: eagerly, or captured (and run) on the other plan, then with `reset`
        // restoring the outputs and this plan reloaded, replayed.
        func runGPU(_ key: String, _ ops: @escaping () -> Void, reset: () -> Void) {
            guard let captureRowSlots else { return ops() }
            _ = load(captureRowSlots)
            gpu.withGraph(key: key, ops)
            reset()
            _ = load(rowSlots)
            gpu.withGraph(key: key, ops)
        }
        let original = captureRowSlots == nil ? [] : gpu.download(og)
        runGPU("lora-check-\(label)-\(kind)", gpuOps) {
            gpu.copy(original, to: og)
            gpu.copy([Float](repeating: 0, count: sg.count), to: sg)
            placeX()
        }
        cpu.loraShrink(xc, a: ac, out: sc, plan: planC, stack: stack)
        cpu.loraExpand(yc, b: bc, out: oc, plan: planC, scalings: scaleC, outOffsets: outs)
        let detail = "\(label): \(n) rows, K \(k), outputs \(moduleOutputs), ranks \(slotRanks) (pool \(maxRank)), \(kind) \(plan.segmentCount) segments"
            + (captureRowSlots.map { " (graph captured on \(BatchPlan(rowSlots: $0, kind: kind, chunkSize: chunk).segmentCount) segments)" } ?? "")
        var results = [compare("loraShrink", sc, sg, tolerance: 1e-2, detail: detail), compare("loraExpand", oc, og, tolerance: 1e-2, detail: detail)]
        if fused {
            cpu.loraShrinkFused(fc, a: ac, scalings: scaleC, plan: planC, stack: stack, scratch: scratchC)
            let chosen = gpu.fusedShrinkLong
            results += compareFused(fc, fg, k: k, detail: detail + ", long segments \(chosen)")
            // The K split's scratch is left zero for the next launch.
            results.append(compare("loraShrinkFused scratch", scratchC, scratchG, tolerance: 0, detail: detail))
            // The other forms for long segments on the same plan (and graph replay).
            // (`batched` runs through `loraShrinkBatched`, below; `loraShrinkFused` takes it as `dense`.)
            for form in CUDABackend.FusedShrinkForm.allCases where form != chosen && form != .batched {
                gpu.fusedShrinkLong = form
                placeX()
                runGPU("lora-check-\(label)-\(kind)-\(form)", { gpu.loraShrinkFused(fg, a: ag, scalings: scaleG, plan: planG, stack: stack, scratch: scratchG) },
                       reset: placeX)
                results += compareFused(fc, fg, k: k, detail: detail + ", long segments \(form)")
                results.append(compare("loraShrinkFused scratch", scratchC, scratchG, tolerance: 0, detail: detail + ", long segments \(form)"))
            }
            gpu.fusedShrinkLong = chosen
            // Split extensions (modules of equal widths, gate/up): each module's R columns a slot in
            // its own copy of the input.
            if stack > 1 && Set(moduleOutputs).count == 1 {
                let splitWidth = k + LoRAManager.fusedExtension(slots: slots, stack: 1, rank: maxRank)
                let (sc2, sg2) = zeros(Shape(stack * n, splitWidth))
                func placeCopies() {
                    gpu.zero(sg2)
                    gpu.copyColumns(xg, into: sg2.reshaped(Shape(stack, n, splitWidth)), column: 0)
                }
                placeCopies()
                cpu.copyColumns(xc, into: sc2.reshaped(Shape(stack, n, splitWidth)), column: 0)
                runGPU("lora-check-\(label)-\(kind)-split", {
                    gpu.loraShrinkFused(sg2.rows(n), a: ag, scalings: scaleG, plan: planG, stack: stack, scratch: scratchG, moduleStride: n * splitWidth)
                }, reset: placeCopies)
                cpu.loraShrinkFused(sc2.rows(n), a: ac, scalings: scaleC, plan: planC, stack: stack, scratch: scratchC, moduleStride: n * splitWidth)
                results += compareFused(sc2, sg2, k: k, detail: detail + ", split extensions")
                results.append(compare("loraShrinkFused scratch", scratchC, scratchG, tolerance: 0, detail: detail + ", split extensions"))
            }
            if captureRowSlots == nil {
                results += batchedShrinkChecks(k: k, moduleOutputs: moduleOutputs, maxRank: maxRank, slotRanks: slotRanks, rowSlots: rowSlots,
                                               x: (xc, xg), a: (ac, ag), plan: planC, scratch: scratchC, detail: detail)
            }
        }
        return results
    }

    /// The fused shrink as batched GEMMs (`LoRAManager.batchedShrinkLayout`, `loraShrinkBatched`)
    /// against the CPU's `loraShrinkFused`, where every adapted run of rows is long enough: one
    /// input, and split extensions for modules of equal widths. Scalings by slot (0.5 or 2), so
    /// slots of the pool's rank take whole-slot instances and lower ranks one a module; where every
    /// adapted slot has the pool's rank, slot 3's second module takes 1, so slot 3 goes by module too
    /// (more distinct widths and scalings would pass the layout's 4 calls).
    func batchedShrinkChecks(k: Int, moduleOutputs: [Int], maxRank: Int, slotRanks: [Int], rowSlots: [Int], x: (DeviceTensor, DeviceTensor),
                             a: (DeviceTensor, DeviceTensor), plan planC: LoRAKernelPlan, scratch: DeviceTensor, detail: String) -> [[String: Any]] {
        let n = rowSlots.count, stack = moduleOutputs.count, slots = slotRanks.count, gpu = self.gpu, cpu = self.cpu
        let runs = LoRARowRun.runs(of: rowSlots.map(Int32.init), slotRanks: slotRanks.map(Int32.init))
        let chunk = LoRAOptions().batchedShrinkRows
        guard runs.allSatisfy({ $0.count >= chunk }) else { return [] }
        let fullRanks = slotRanks.allSatisfy { $0 == 0 || $0 == maxRank }
        let scales = (0..<(slots * stack)).map { i -> Float in fullRanks && i / stack == 3 && i % stack == 1 ? 1 : (i / stack % 2 == 0 ? 0.5 : 2) }
        let (scaleC, _) = floats32(scales)
        var results: [[String: Any]] = []
        let splits = stack > 1 && Set(moduleOutputs).count == 1 ? [false, true] : [false]
        for split in splits {
            let width = k + LoRAManager.fusedExtension(slots: slots, stack: split ? 1 : stack, rank: maxRank), copies = split ? stack : 1
            let (fc, fg) = zeros(Shape(copies * n, width))
            gpu.copyColumns(x.1, into: fg.reshaped(Shape(copies, n, width)), column: 0)
            cpu.copyColumns(x.0, into: fc.reshaped(Shape(copies, n, width)), column: 0)
            let moduleStride = split ? n * width : 0
            let label = detail + ", batched" + (split ? ", split extensions" : "")
            guard let layout = LoRAManager.batchedShrinkLayout(
                runs: runs, rows: chunk, slotRanks: slotRanks.map(Int32.init), scalings: scales, stack: stack, rank: maxRank, k: k, rowStride: width,
                moduleStride: moduleStride, a: gpu.deviceAddress(of: a.1)!, input: gpu.deviceAddress(of: fg)!, elementBytes: fg.dtype.byteCount) else {
                results.append(["op": "loraShrinkBatched", "pass": false, "detail": label + ": no layout"])
                continue
            }
            let (_, pointers) = ints(layout.pointers.flatMap { [Int32(truncatingIfNeeded: $0), Int32(truncatingIfNeeded: $0 >> 32)] })
            let previous = gpu.fusedShrinkLong
            gpu.fusedShrinkLong = .batched
            let ran = gpu.loraShrinkBatched(LoRABatchedShrink(instances: layout.pointers.count / 3, rows: layout.rows, k: k, rowStride: width,
                                                              calls: layout.calls, pointers: pointers))
            gpu.fusedShrinkLong = previous
            cpu.loraShrinkFused(fc.rows(n), a: a.0, scalings: scaleC, plan: planC, stack: stack, scratch: scratch, moduleStride: moduleStride)
            results += compareFused(fc, fg, k: k, detail: label + " (\(layout.calls.count) calls, \(layout.pointers.count / 3) instances)")
            if !ran { results.append(["op": "loraShrinkBatched", "pass": false, "detail": label + ": not run"]) }
        }
        return results
    }

    /// The fused shrink's output in two parts: x, left as it was (exact), and the scaled shrink columns
    /// (bf16 rounding: 1e-2 relative L2), each against the CPU.
    func compareFused(_ c: DeviceTensor, _ g: DeviceTensor, k: Int, detail: String) -> [[String: Any]] {
        let width = c.shape.rowCount, rows = c.shape[0], a = cpu.download(c), b = gpu.download(g)
        func columns(_ values: [Float], _ range: Range<Int>) -> [Float] {
            (0..<rows).flatMap { values[($0 * width + range.lowerBound)..<($0 * width + range.upperBound)] }
        }
        return [("loraShrinkFused x", 0..<k, 0.0), ("loraShrinkFused xA", k..<width, 1e-2)].map { name, range, tolerance in
            compare(name, columns(a, range), columns(b, range), tolerance: tolerance, detail: detail, nonzero: true)
        }
    }

    /// The LoRA kernels over adapter mixes, ranks, plan kinds and graph replay.
    mutating func loraChecks() -> [[String: Any]] {
        var results: [[String: Any]] = []
        let qkv = [4096, 1024, 1024], gateUp = [14336, 14336]
        for kind in LoRABackendKind.allCases {
            // Uniform: one adapter, decode rows.
            results += loraCase("uniform", k: 4096, moduleOutputs: qkv, maxRank: 16, slotRanks: [0, 16], rowSlots: Array(repeating: 1, count: 32), kind: kind)
            // Mixed: 7 adapters of ranks 8…64 and base rows, round robin over 256 rows.
            let mixedRanks = [0, 8, 16, 32, 64, 16, 8, 64]
            results += loraCase("mixed", k: 4096, moduleOutputs: gateUp, maxRank: 64, slotRanks: mixedRanks, rowSlots: (0..<256).map { $0 % 8 }, kind: kind)
            // Skewed: one adapter has most rows; rank 256; down-projection input width; an empty slot.
            let skewed = Array(repeating: 1, count: 200) + (0..<15).map { 2 + $0 % 3 } + [0, 0, 0, 0]
            results += loraCase("skewed", k: 14336, moduleOutputs: [4096], maxRank: 256, slotRanks: [0, 256, 8, 128, 32, 64], rowSlots: skewed.shuffledDeterministically(), kind: kind)
            // Prefill: 4 sequences of 512 rows, rank 64, q/k/v stacked.
            results += loraCase("prefill", k: 4096, moduleOutputs: qkv, maxRank: 64, slotRanks: [0, 64, 64, 64, 64], rowSlots: (0..<2048).map { 1 + $0 / 512 }, kind: kind)
            // Prefill runs of uneven lengths (batched shrinks overlap their last instance), q/k/v at rank 64
            // and gate/up at rank 16 (split extensions), with base rows between.
            let unevenRuns = [(1, 100), (0, 30), (2, 64), (3, 237), (4, 70), (0, 11)].flatMap { Array(repeating: $0.0, count: $0.1) }
            results += loraCase("prefill-runs", k: 4096, moduleOutputs: qkv, maxRank: 64, slotRanks: [0, 64, 32, 64, 64], rowSlots: unevenRuns, kind: kind)
            results += loraCase("prefill-runs-split", k: 4096, moduleOutputs: gateUp, maxRank: 16, slotRanks: [0, 16, 8, 16, 16], rowSlots: unevenRuns, kind: kind)
            // Prefill chunks with ranks that end inside a 16-byte word of B (12, 7) and base rows.
            results += loraCase("prefill-odd-ranks", k: 4096, moduleOutputs: qkv, maxRank: 16, slotRanks: [0, 12, 7, 16],
                                rowSlots: (0..<512).map { $0 / 128 }, kind: kind)
            // Odd ranks and widths the tensor-core kernels do not take (the general kernels run).
            results += loraCase("odd", k: 172, moduleOutputs: [172, 36, 36], maxRank: 8, slotRanks: [0, 5, 8, 3], rowSlots: (0..<21).map { $0 % 4 }, kind: kind)
            results += loraCase("odd-bf16", k: 128, moduleOutputs: [128, 64], maxRank: 6, slotRanks: [0, 5, 6], rowSlots: (0..<9).map { $0 % 3 }, kind: kind, shrunkDType: .bf16)
            // Long segments (sgmv, the dense fused shrink) over a K that is not a multiple of 64.
            results += loraCase("long-odd-k", k: 344, moduleOutputs: [192, 96, 96], maxRank: 24, slotRanks: [0, 7, 24],
                                rowSlots: (0..<300).map { $0 % 3 }, kind: kind)
            // Tiny-model widths on the tensor-core path (K % 8 == 0, offsets % 8 == 0), odd rank in an even pool.
            results += loraCase("tiny", k: 344, moduleOutputs: [192, 96, 96], maxRank: 16, slotRanks: [0, 7, 16], rowSlots: (0..<19).map { $0 % 3 }, kind: kind)
            // Many adapters at decode (the S-LoRA workload): 64 slots of ranks 8 to 32 and base rows, 160 rows in random order.
            let manyRanks = [0] + (0..<64).map { [8, 16, 32, 12][$0 % 4] }
            results += loraCase("many", k: 4096, moduleOutputs: qkv, maxRank: 32, slotRanks: manyRanks,
                                rowSlots: (0..<160).map { $0 % 65 }.shuffledDeterministically(), kind: kind)
            // An S-LoRA step: 106 rows over 30 adapters of ranks 8 to 64 and base rows, o's shape.
            results += loraCase("many-r64", k: 4096, moduleOutputs: [4096], maxRank: 64, slotRanks: [0] + (0..<30).map { [8, 16, 32, 64][$0 % 4] },
                                rowSlots: (0..<106).map { $0 % 31 }.shuffledDeterministically(), kind: kind)
            // A pool of rank 24 (8-column tiles; ranks ending inside a tile), down's input width, replayed in a
            // graph captured with one adapter.
            results += loraCase("many-r24", k: 14336, moduleOutputs: [4096], maxRank: 24, slotRanks: [0] + (0..<40).map { [24, 8, 20, 4][$0 % 4] },
                                rowSlots: (0..<120).map { $0 % 41 }.shuffledDeterministically(), kind: kind, captureRowSlots: Array(repeating: 1, count: 120))
            // Graph replay with more segments than at capture.
            results += loraCase("graph", k: 4096, moduleOutputs: qkv, maxRank: 16, slotRanks: [0, 16, 8, 16, 16, 4, 16, 12, 16],
                                rowSlots: (0..<64).map { $0 % 9 }, kind: kind, captureRowSlots: Array(repeating: 1, count: 64))
        }
        return results
    }
}

/// The LoRA deltas that fused decode steps add where a GEMM output is read (`LoRADelta`): RMSNorm
/// (x and K-slices, the vector and the scalar paths), RoPE with the cache write, SiLU·mul.
extension OpChecks {
    /// Random B, scalings and xa for `slotRanks` (rank stride `maxRank`) over modules `moduleOutputs`:
    /// the CPU's and the GPU's delta, and the GEMM-output width (base columns, then every slot's xa).
    mutating func loraDelta(moduleOutputs: [Int], maxRank: Int, slotRanks: [Int], rowSlots: [Int]) -> (LoRADelta, LoRADelta, width: Int) {
        let slots = slotRanks.count, stack = moduleOutputs.count
        let offsets = moduleOutputs.reduce(into: [0]) { $0.append($0.last! + $1) }
        let (bc, bg, _) = pair(Shape(slots, offsets.last!, maxRank), scale: 0.1)
        let (sc, sg) = floats32((0..<(slots * stack)).map { _ in 0.75 + rng.uniform() * 0.5 })
        let (rc, rg) = ints(rowSlots.map(Int32.init))
        let (kc, kg) = ints(slotRanks.map(Int32.init))
        return (LoRADelta(b: bc, scalings: sc, rowSlots: rc, slotRanks: kc, outOffsets: offsets),
                LoRADelta(b: bg, scalings: sg, rowSlots: rg, slotRanks: kg, outOffsets: offsets),
                offsets.last! + LoRAManager.fusedExtension(slots: slots, stack: stack, rank: maxRank))
    }

    /// Columns `0 ..< width` of each row of `t` (rows `t.shape.rowCount` apart), from either backend.
    func baseColumns(_ t: DeviceTensor, _ width: Int, on backend: ComputeBackend) -> [Float] {
        let values = backend.download(t), stride = t.shape.rowCount
        return (0..<t.shape[0]).flatMap { values[($0 * stride)..<($0 * stride + width)] }
    }

    mutating func loraDeltaChecks() -> [[String: Any]] {
        var results: [[String: Any]] = []
        // Ranks 16 and 64 pools with ranks ending inside a 16-byte word of B, base rows, an unused
        // slot; a pool of rank 12, whose rows of B are not 16-byte aligned (the scalar loop).
        for (maxRank, slotRanks) in [(16, [0, 16, 7, 16, 12]), (64, [0, 64, 8, 33]), (12, [0, 12, 5])] {
            let ranksLabel = "ranks \(slotRanks) of \(maxRank)"
            // RMSNorm of a fused o/down output, bf16 x and f32 K-slices: loom_norm_lora (d % 16 == 0, d ≤ 8192),
            // loom_norm's vector path (d = 9216) and its scalar one (d = 100, 98); 128 rows, a decode step's most
            // (`LoRAOptions.fusedDecodeRows`).
            for (n, d, count) in [(5, 4096, 0), (3, 100, 0), (32, 4096, 2), (7, 100, 3), (4, 5120, 2), (3, 96, 0), (2, 9216, 0), (3, 98, 0),
                                  (128, 4096, 0)] {
                let rows = (0..<n).map { $0 % slotRanks.count }
                let (lc, lg, width) = loraDelta(moduleOutputs: [d], maxRank: maxRank, slotRanks: slotRanks, rowSlots: rows)
                let (wc, wg, _) = pair(Shape(d))
                let (rc, rg, _) = pair(Shape(n, d), scale: 2)
                let (oc, og) = zeros(Shape(n, d))
                let label = "\(n)×\(d)\(count > 0 ? " in \(count) slices" : ""), \(ranksLabel)"
                if count == 0 {
                    let (xc, xg, _) = pair(Shape(n, width))
                    cpu.addRMSNorm(residual: rc, xc, weight: wc, eps: 1e-5, out: oc, lora: lc)
                    gpu.addRMSNorm(residual: rg, xg, weight: wg, eps: 1e-5, out: og, lora: lg)
                } else {
                    let (sc, sg) = floats32((0..<count * n * width).map { _ in rng.uniform() })
                    cpu.addRMSNorm(residual: rc, slices: sc.reshaped(Shape(count, n, width)), weight: wc, eps: 1e-5, out: oc, lora: lc)
                    gpu.addRMSNorm(residual: rg, slices: sg.reshaped(Shape(count, n, width)), weight: wg, eps: 1e-5, out: og, lora: lg)
                }
                results.append(compare("addRMSNorm+delta.residual", rc, rg, tolerance: 1e-2, detail: label))
                results.append(compare("addRMSNorm+delta.out", oc, og, tolerance: 1e-2, detail: label))
            }
            // RoPE of a fused q/k/v output: q, k and v (in qkv and the caches) gain their deltas;
            // a head a block and 5.
            let ropeHeads = gpu.ropeHeadsPerBlock
            defer { gpu.ropeHeadsPerBlock = ropeHeads }
            for perBlock in [1, 5] {
                gpu.ropeHeadsPerBlock = perBlock
                let n = 9, heads = 32, kvHeads = 8, headDim = 128
                let rows = (0..<n).map { $0 % slotRanks.count }
                let (lc, lg, width) = loraDelta(moduleOutputs: [heads * headDim, kvHeads * headDim, kvHeads * headDim], maxRank: maxRank,
                                                slotRanks: slotRanks, rowSlots: rows)
                let (qc, qg, _) = pair(Shape(n, width))
                let (pc, pg) = ints((0..<n).map { _ in Int32(rng.int(5000)) })
                let config = ModelConfig(architecture: .llama, vocabSize: 10, hiddenSize: heads * headDim, intermediateSize: 10, numLayers: 1,
                                         numHeads: heads, numKVHeads: kvHeads, headDim: headDim, ropeTheta: 500000, ropeScaling: nil)
                let (fc, fg) = floats32(config.ropeInverseFrequencies())
                let (kc, kg) = zeros(Shape(64, kvHeads * headDim)), (vc, vg) = zeros(Shape(64, kvHeads * headDim))
                let (sc, sg) = ints([5, 63, -1, 0, 17, 40, 1, 2, 62])
                cpu.ropeAndWriteKV(qkv: qc, positions: pc, inverseFrequencies: fc, kCache: kc, vCache: vc, slotMapping: sc,
                                   numHeads: heads, numKVHeads: kvHeads, headDim: headDim, lora: lc)
                gpu.ropeAndWriteKV(qkv: qg, positions: pg, inverseFrequencies: fg, kCache: kg, vCache: vg, slotMapping: sg,
                                   numHeads: heads, numKVHeads: kvHeads, headDim: headDim, lora: lg)
                let label = "\(n) rows (one skipped), \(heads)+\(kvHeads) heads × \(headDim), \(ranksLabel), \(perBlock) heads a block"
                results.append(compare("ropeAndWriteKV+delta.qkv", baseColumns(qc, lc.width, on: cpu), baseColumns(qg, lg.width, on: gpu),
                                       tolerance: 1e-2, detail: label))
                results.append(compare("ropeAndWriteKV+delta.k", kc, kg, tolerance: 1e-2, detail: label))
                results.append(compare("ropeAndWriteKV+delta.v", vc, vg, tolerance: 1e-2, detail: label))
            }
            // SiLU·mul of a fused gate/up output (a block per slot): rows spread over the slots, and
            // skewed (most in one slot, more than the 4 rows a block takes at a time); once into rows
            // wider than the output (down's wide input, where down takes the widened K).
            for (n, inter, skewed, extra) in [(3, 344, false, 0), (32, 14336, false, 0), (13, 14336, true, 0), (128, 14336, false, 0),
                                              (32, 14336, false, 512)] {
                let rows = (0..<n).map { skewed ? ($0 % 5 == 2 ? 0 : 1) : $0 % slotRanks.count }
                let (lc, lg, width) = loraDelta(moduleOutputs: [inter, inter], maxRank: maxRank, slotRanks: slotRanks, rowSlots: rows)
                let (gc, gg, _) = pair(Shape(n, width), scale: 4)
                let (oc, og) = zeros(Shape(n, inter + extra))
                gpu.zero(og)
                cpu.siluMul(gc, out: oc, lora: lc)
                gpu.siluMul(gg, out: og, lora: lg)
                let wide = extra > 0 ? ", into rows of \(inter + extra)" : ""
                results.append(compare("siluMul+delta", oc, og, tolerance: 1e-2, detail: "\(n)×\(inter)\(skewed ? " skewed" : "")\(wide), \(ranksLabel)"))
            }
        }
        return results
    }
}
