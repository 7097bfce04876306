import LoomCore

extension CPUBackend {
    public func loraShrink(_ x: DeviceTensor, a: DeviceTensor, out: DeviceTensor, plan: LoRAKernelPlan, stack: Int) {
        let k = x.shape.rowCount, slotWidth = a.shape[1], maxRank = slotWidth / stack
        let outStride = out.shape.rowCount
        precondition(a.shape[2] == k && outStride == slotWidth, "loraShrink: x \(x.shape), A \(a.shape), out \(out.shape)")
        let o = out.f32
        shrink(x, a: a, plan: plan, stack: stack) { p, _, _, m in (o + p * outStride + m * maxRank, 1) }
    }

    /// The shrink both forms share: for each plan position `p` (token row `row`) of a segment whose
    /// slot has rank r > 0 and each stacked module `m`, `scale · A[slot][m·R ..< m·R + r] · x[row]`
    /// into the r floats at `pointer`, where `(pointer, scale) = destination(p, row, slot, m)`.
    private func shrink(_ x: DeviceTensor, a: DeviceTensor, plan: LoRAKernelPlan, stack: Int,
                        destination: @escaping (_ p: Int, _ row: Int, _ slot: Int, _ m: Int) -> (UnsafeMutablePointer<Float>, Float)) {
        // x's rows are its width apart, of which the first K = A's in-columns are read.
        let k = a.shape[2], xStride = x.shape.rowCount, slotWidth = a.shape[1], maxRank = slotWidth / stack
        let xs = x.f32, aw = a.f32, perm = plan.permutation.i32
        let starts = plan.segmentStarts.i32, slots = plan.segmentSlots.i32, ranks = plan.slotRanks.i32
        parallelFor(plan.numSegments, work: Int(starts[plan.numSegments]) * k * plan.maxRank * stack) { segments in
            for g in segments {
                let slot = Int(slots[g]), rank = Int(ranks[slot])
                if rank == 0 { continue }
                for p in Int(starts[g])..<Int(starts[g + 1]) {
                    let row = Int(perm[p])
                    for m in 0..<stack {
                        let w = aw + (slot * slotWidth + m * maxRank) * k, (dst, scale) = destination(p, row, slot, m)
                        Self.shrinkRow(xs + row * xStride, w, columns: rank, k: k, scale: scale, into: dst)
                    }
                }
            }
        }
    }

    /// One row of a shrink: `scale · w[c] · x` for the `columns` rows `c` of `w` (K apart), into `out`.
    private static func shrinkRow(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, columns: Int, k: Int, scale: Float,
                                  into out: UnsafeMutablePointer<Float>) {
        Kernels.gemmNT(x: x, rows: 1, w: w, outputs: 0..<columns, k: k, out: out, outStride: columns)
        if scale != 1 { for j in 0..<columns { out[j] *= scale } }
    }

    public func loraExpand(_ shrunk: DeviceTensor, b: DeviceTensor, out: DeviceTensor, plan: LoRAKernelPlan, scalings: DeviceTensor, outOffsets: [Int]) {
        let stack = outOffsets.count - 1, totalOut = b.shape[1], maxRank = b.shape[2]
        let outStride = out.shape.rowCount, shrunkStride = shrunk.shape.rowCount
        precondition(outOffsets.last == totalOut && totalOut == outStride && shrunkStride == stack * maxRank,
                     "loraExpand: shrunk \(shrunk.shape), B \(b.shape), out \(out.shape)")
        let ys = shrunk.f32, bw = b.f32, o = out.f32, scale = scalings.f32, perm = plan.permutation.i32
        let starts = plan.segmentStarts.i32, slots = plan.segmentSlots.i32, ranks = plan.slotRanks.i32
        // Split by output columns: each thread owns a column range of every row, so no two write one element.
        parallelFor(totalOut, work: Int(starts[plan.numSegments]) * totalOut * plan.maxRank) { cols in
            for g in 0..<plan.numSegments {
                let slot = Int(slots[g]), rank = Int(ranks[slot])
                if rank == 0 { continue }
                for m in 0..<stack {
                    let lo = max(cols.lowerBound, outOffsets[m]), hi = min(cols.upperBound, outOffsets[m + 1])
                    if lo >= hi { continue }
                    let s = scale[slot * stack + m]
                    for p in Int(starts[g])..<Int(starts[g + 1]) {
                        let y = ys + p * shrunkStride + m * maxRank
                        let oi = o + Int(perm[p]) * outStride
                        for c in lo..<hi {
                            oi[c] += s * Kernels.dot(y, bw + (slot * totalOut + c) * maxRank, rank)
                        }
                    }
                }
            }
        }
    }

    public func loraShrinkFused(_ out: DeviceTensor, a: DeviceTensor, scalings: DeviceTensor, plan: LoRAKernelPlan, stack: Int,
                                scratch: DeviceTensor, moduleStride: Int) {
        let k = a.shape[2], slotWidth = a.shape[1], maxRank = slotWidth / stack, outStride = out.shape.rowCount
        // Split: each module's extension is the slots' R columns, in its own copy of the input.
        let extensionWidth = moduleStride > 0 ? maxRank : slotWidth
        precondition(outStride >= k + extensionWidth, "loraShrinkFused: A \(a.shape), out \(out.shape)")
        precondition(moduleStride == 0 || moduleStride >= out.count, "loraShrinkFused: module stride \(moduleStride) inside out \(out.shape)")
        let o = out.f32, scale = scalings.f32
        shrink(out, a: a, plan: plan, stack: stack) { _, row, slot, m in
            precondition(k + (slot + 1) * extensionWidth <= outStride, "loraShrinkFused: slot \(slot)'s columns past out \(out.shape)")
            let column = moduleStride > 0 ? k + slot * maxRank : k + slot * slotWidth + m * maxRank
            return (o + m * moduleStride + row * outStride + column, scale[slot * stack + m])
        }
    }

    public var runsBatchedShrinks: Bool { true }

    public func deviceAddress(of tensor: DeviceTensor) -> UInt64? { UInt64(UInt(bitPattern: tensor.raw)) }

    /// The batched shrink on the host, through the same addresses a device reads (host ones here):
    /// each instance's rows as `shrink` computes a row (`shrinkRow`), so a
    /// step gives the same values whichever form it takes.
    public func loraShrinkBatched(_ shrink: LoRABatchedShrink) -> Bool {
        let words = shrink.pointers.i32, n = shrink.instances, k = shrink.k, stride = shrink.rowStride
        precondition(shrink.pointers.count >= 6 * n, "loraShrinkBatched: \(n) instances, pointers \(shrink.pointers.shape)")
        func address(_ i: Int) -> UnsafeMutablePointer<Float> {
            let bits = UInt(UInt32(bitPattern: words[2 * i])) | UInt(UInt32(bitPattern: words[2 * i + 1])) << 32
            return UnsafeMutablePointer(bitPattern: bits)!
        }
        // Instances one after another (a run's last one may overlap the one before), rows in parallel.
        for call in shrink.calls {
            for i in call.first..<(call.first + call.count) {
                let a = address(i), x = address(n + i), out = address(2 * n + i)
                parallelFor(shrink.rows, work: shrink.rows * call.columns * k) { rows in
                    for r in rows {
                        let dst = out + r * stride
                        Self.shrinkRow(x + r * stride, a, columns: call.columns, k: k, scale: call.scaling, into: dst)
                    }
                }
            }
        }
        batchedShrinkCalls += shrink.calls.count
        return true
    }

    public func copyColumns(_ x: DeviceTensor, into copies: DeviceTensor, column: Int) {
        let (out, count, copyStride) = copies.outputCopies
        let n = x.shape[0], width = x.shape.rowCount, stride = out.shape.rowCount
        precondition(x.dtype == out.dtype && out.shape[0] >= n && column >= 0 && column + width <= stride,
                     "copyColumns: \(x.shape) into \(copies.shape) at column \(column)")
        let e = x.dtype.byteCount, src = x.raw, dst = out.raw
        for c in 0..<count {
            for i in 0..<n {
                (dst + (c * copyStride + i * stride + column) * e).copyMemory(from: src + i * width * e, byteCount: width * e)
            }
        }
    }
}

extension LoRADelta {
    /// Adds row `i`'s delta to `y[c]` for the base columns `c` in `columns`; `xa` is the row's
    /// shrink results (the GEMM output's columns from `width` on).
    func add(row i: Int, xa: UnsafePointer<Float>, to y: UnsafeMutablePointer<Float>, columns: Range<Int>) {
        let slot = Int(rowSlots.i32[i]), r = Int(slotRanks.i32[slot]), stride = rank
        guard r > 0 else { return }
        for m in 0..<stack {
            let lo = max(columns.lowerBound, outOffsets[m]), hi = min(columns.upperBound, outOffsets[m + 1])
            guard lo < hi else { continue }
            let scale = scalings.f32[slot * stack + m], v = xa + (slot * stack + m) * stride
            for c in lo..<hi { y[c] += scale * Kernels.dot(v, b.f32 + (slot * width + c) * stride, r) }
        }
    }
}
