import Foundation
import LoomCore

/// The reference implementation of every op: f32 on the host, SIMD inner loops, rows or outputs
/// split across cores. Every device backend is tested against it.
public final class CPUBackend: ComputeBackend {
    public let name = "cpu"
    public let weightDType = DType.f32
    public let activationDType = DType.f32

    /// What `residualSliceCount` answers where it divides K: 1 (no slices) unless a test asks for
    /// more, to run the model's sliced path on the reference backend.
    public var residualSlices = 1
    /// The batched shrinks' calls run so far (`loraShrinkBatched`), for tests that must take them.
    public internal(set) var batchedShrinkCalls = 0

    public init() {}

    public func allocate(_ shape: Shape, dtype: DType) throws -> DeviceTensor {
        guard dtype == .f32 || dtype == .i32 else {
            throw LoomError.unsupported("the CPU backend stores f32 and i32 tensors, not \(dtype)")
        }
        return DeviceTensor(storage: CPUStorage(byteCount: shape.count * 4), shape: shape, dtype: dtype)
    }

    public func uploadWeights(_ source: UnsafeRawPointer, dtype: DType, shape: Shape) throws -> DeviceTensor {
        let t = try allocate(shape, dtype: .f32)
        HalfConversion.toFloat(source, dtype: dtype, count: shape.count, into: t.f32)
        return t
    }

    public func copy(_ values: [Float], to tensor: DeviceTensor) {
        precondition(values.count <= tensor.count, "copying \(values.count) floats into \(tensor.shape)")
        values.withUnsafeBufferPointer { tensor.f32.update(from: $0.baseAddress!, count: values.count) }
    }

    public func copy(_ values: [Int32], to tensor: DeviceTensor) {
        precondition(values.count <= tensor.count, "copying \(values.count) ints into \(tensor.shape)")
        if values.isEmpty { return }
        values.withUnsafeBufferPointer { tensor.i32.update(from: $0.baseAddress!, count: values.count) }
    }

    public func copyRows(_ values: [Int32], width: Int, to tensor: DeviceTensor) {
        let pitch = tensor.shape.rowCount, rows = copyRowsCount(values, width: width, to: tensor)
        values.withUnsafeBufferPointer { v in
            for r in 0..<rows { (tensor.i32 + r * pitch).update(from: v.baseAddress! + r * width, count: width) }
        }
    }

    public func download(_ tensor: DeviceTensor) -> [Float] {
        if tensor.dtype == .i32 {
            return (0..<tensor.count).map { Float(tensor.i32[$0]) }
        }
        return Array(UnsafeBufferPointer(start: tensor.f32, count: tensor.count))
    }

    public func embed(tokens: DeviceTensor, table: DeviceTensor, out: DeviceTensor) {
        let n = tokens.count, d = table.shape[1], vocab = table.shape[0]
        precondition(out.shape[0] >= n && out.shape.rowCount == d)
        let ids = tokens.i32, src = table.f32, dst = out.f32
        for i in 0..<n {
            let id = Int(ids[i])
            precondition(id >= 0 && id < vocab, "token id \(id) is outside the vocabulary of \(vocab)")
            (dst + i * d).update(from: src + id * d, count: d)
        }
    }

    public func rmsNorm(_ x: DeviceTensor, weight: DeviceTensor, eps: Float, out copies: DeviceTensor) {
        let (out, count, copyStride) = copies.outputCopies
        let n = x.shape[0], d = x.shape.rowCount, oStride = out.shape.rowCount
        precondition(oStride >= d && out.shape[0] >= n, "rmsNorm: \(x.shape) into \(copies.shape)")
        let xs = x.f32, w = weight.f32, o = out.f32
        parallelFor(n, work: n * d * 4) { rows in
            for i in rows { Self.normRow(xs + i * d, w, eps, o + i * oStride, d, copies: count, copyStride: copyStride) }
        }
    }

    public func addRMSNorm(residual: DeviceTensor, _ x: DeviceTensor, weight: DeviceTensor, eps: Float, out copies: DeviceTensor, lora: LoRADelta?) {
        let (out, count, copyStride) = copies.outputCopies
        let n = x.shape[0], d = residual.shape.rowCount, stride = x.shape.rowCount, oStride = out.shape.rowCount
        precondition((stride == d || (lora?.width == d && stride >= d)) && oStride >= d && out.shape[0] >= n,
                     "addRMSNorm: x \(x.shape) for residual \(residual.shape) into \(copies.shape)")
        let r = residual.f32, xs = x.f32, w = weight.f32, o = out.f32
        parallelFor(n, work: n * d * 5) { rows in
            for i in rows {
                let ri = r + i * d
                Kernels.axpy(1, xs + i * stride, ri, d)
                lora?.add(row: i, xa: xs + i * stride + d, to: ri, columns: 0..<d)
                Self.normRow(ri, w, eps, o + i * oStride, d, copies: count, copyStride: copyStride)
            }
        }
    }

    /// The norm of a row of d into `out`, and into `copies - 1` more rows `copyStride` apart.
    @inline(__always)
    private static func normRow(_ x: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, _ eps: Float, _ out: UnsafeMutablePointer<Float>, _ d: Int,
                                copies: Int, copyStride: Int) {
        let meanSquare = Kernels.dot(x, x, d) / Float(d)
        let scale = 1 / sqrtf(meanSquare + eps)
        for j in 0..<d { out[j] = w[j] * (x[j] * scale) }
        for c in 1..<max(copies, 1) { (out + c * copyStride).update(from: out, count: d) }
    }

    public func linear(_ x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor?, out: DeviceTensor) {
        let n = x.shape[0], k = x.shape.rowCount, outputs = weight.shape[0], wStride = weight.shape[1]
        precondition(wStride >= k, "linear: x \(x.shape) · weightᵀ \(weight.shape)")
        precondition(out.shape[0] == n && out.shape.rowCount == outputs, "linear: out \(out.shape) for \(n)×\(outputs)")
        precondition((bias?.count ?? 0) <= outputs, "linear: bias \(bias?.shape ?? Shape()) for out \(out.shape)")
        Self.gemm(x.f32, rows: n, k: k, weight.f32, wStride: wStride, outputs: outputs, out.f32, bias: bias?.f32, biasCount: bias?.count ?? 0)
    }

    public func linearSlices(_ x: DeviceTensor, weight: DeviceTensor, out: DeviceTensor) {
        let n = x.shape[0], width = x.shape.rowCount, slices = out.shape[0], outputs = weight.shape[0]
        precondition(out.shape.rank == 3 && out.shape[1] == n && out.shape[2] == outputs && width % slices == 0 && weight.shape[1] >= width,
                     "linearSlices: x \(x.shape) · weightᵀ \(weight.shape) into \(out.shape)")
        let k = width / slices
        let slice = UnsafeMutablePointer<Float>.allocate(capacity: max(n * k, 1))
        defer { slice.deallocate() }
        for s in 0..<slices {
            for i in 0..<n { (slice + i * k).update(from: x.f32 + i * width + s * k, count: k) }
            Self.gemm(slice, rows: n, k: k, weight.f32 + s * k, wStride: weight.shape[1], outputs: outputs, out.f32 + s * n * outputs, bias: nil, biasCount: 0)
        }
    }

    public func linearStacked(_ x: DeviceTensor, weight: DeviceTensor, out: DeviceTensor) {
        let count = x.shape[0], n = x.shape[1], k = x.shape[2], wStride = weight.shape[1]
        precondition(x.shape.rank == 3 && weight.shape[0] % count == 0 && wStride >= k, "linearStacked: x \(x.shape) · weightᵀ \(weight.shape)")
        let m = weight.shape[0] / count
        precondition(out.shape[0] == n && out.shape.rowCount == count * m, "linearStacked: out \(out.shape) for \(n)×\(count)·\(m)")
        for s in 0..<count {
            Self.gemm(x.f32 + s * n * k, rows: n, k: k, weight.f32 + s * m * wStride, wStride: wStride, outputs: m, out.f32 + s * m,
                      bias: nil, biasCount: 0, outStride: count * m)
        }
    }

    /// `out[i][c] = x[i] · w[c] (+ bias[c] for c < biasCount)` for `rows` rows of `k` and `outputs` rows of `w`, `wStride` apart;
    /// out's rows `outStride` apart (`outputs` when nil).
    private static func gemm(_ x: UnsafePointer<Float>, rows n: Int, k: Int, _ w: UnsafePointer<Float>, wStride: Int, outputs: Int,
                             _ o: UnsafeMutablePointer<Float>, bias b: UnsafePointer<Float>?, biasCount: Int, outStride: Int? = nil) {
        // Split by output blocks of 4 so every thread streams its own slice of the weight once.
        let blocks = (outputs + 3) / 4, stride = outStride ?? outputs
        parallelFor(blocks, work: n * k * outputs) { range in
            let cols = (range.lowerBound * 4)..<min(outputs, range.upperBound * 4)
            Kernels.gemmNT(x: x, rows: n, w: w, outputs: cols, k: k, wStride: wStride, out: o, outStride: stride)
            if let b {
                for i in 0..<n { for c in cols where c < biasCount { o[i * stride + c] += b[c] } }
            }
        }
    }

    public func addRMSNorm(residual: DeviceTensor, slices: DeviceTensor, weight: DeviceTensor, eps: Float, out copies: DeviceTensor, lora: LoRADelta?) {
        let (out, copyCount, copyStride) = copies.outputCopies
        let count = slices.shape[0], n = residual.shape[0], d = residual.shape.rowCount, width = slices.shape[2], oStride = out.shape.rowCount
        precondition(slices.shape.rank == 3 && count >= 1 && slices.shape[1] == n && (width == d || (lora?.width == d && width >= d)) && oStride >= d
                     && out.shape[0] >= n, "addRMSNorm: slices \(slices.shape) for \(residual.shape) into \(copies.shape)")
        let r = residual.f32, p = slices.f32, w = weight.f32, o = out.f32
        parallelFor(n, work: n * d * (4 + count)) { rows in
            let sum = UnsafeMutablePointer<Float>.allocate(capacity: width)
            defer { sum.deallocate() }
            for i in rows {
                sum.update(from: p + i * width, count: width)
                for s in 1..<count { Kernels.axpy(1, p + (s * n + i) * width, sum, width) }
                lora?.add(row: i, xa: sum + d, to: sum, columns: 0..<d)
                let ri = r + i * d
                Kernels.axpy(1, sum, ri, d)
                Self.normRow(ri, w, eps, o + i * oStride, d, copies: copyCount, copyStride: copyStride)
            }
        }
    }

    public func residualSliceCount(rows: Int, outFeatures: Int, inFeatures: Int) -> Int {
        inFeatures % residualSlices == 0 ? residualSlices : 1
    }

    public func ropeAndWriteKV(qkv: DeviceTensor, positions: DeviceTensor, inverseFrequencies: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor,
                               slotMapping: DeviceTensor, numHeads: Int, numKVHeads: Int, headDim: Int, lora: LoRADelta?) {
        if let lora {
            let stride = qkv.shape.rowCount, q = qkv.f32
            precondition(lora.width == (numHeads + 2 * numKVHeads) * headDim && stride >= lora.width, "ropeAndWriteKV: qkv \(qkv.shape)")
            for i in 0..<qkv.shape[0] { lora.add(row: i, xa: q + i * stride + lora.width, to: q + i * stride, columns: 0..<lora.width) }
        }
        rope(qkv: qkv, positions: positions, inverseFrequencies: inverseFrequencies, numHeads: numHeads, numKVHeads: numKVHeads, headDim: headDim)
        writeKV(qkv: qkv, kCache: kCache, vCache: vCache, slotMapping: slotMapping, numHeads: numHeads, numKVHeads: numKVHeads, headDim: headDim)
    }

    /// `ropeAndWriteKV`'s rotation: q and k heads of each row, in place.
    public func rope(qkv: DeviceTensor, positions: DeviceTensor, inverseFrequencies: DeviceTensor, numHeads: Int, numKVHeads: Int, headDim: Int) {
        let n = qkv.shape[0], stride = qkv.shape.rowCount, half = headDim / 2
        let base = qkv.f32, pos = positions.i32, inv = inverseFrequencies.f32
        let rotatedHeads = numHeads + numKVHeads
        parallelFor(n, work: n * rotatedHeads * headDim * 8) { rows in
            for i in rows {
                let p = Float(pos[i])
                for j in 0..<half {
                    let angle = p * inv[j]
                    let c = cosf(angle), s = sinf(angle)
                    for h in 0..<rotatedHeads {
                        let v = base + i * stride + h * headDim
                        let x1 = v[j], x2 = v[j + half]
                        v[j] = x1 * c - x2 * s
                        v[j + half] = x2 * c + x1 * s
                    }
                }
            }
        }
    }

    /// `ropeAndWriteKV`'s cache write: k and v of each row with a slot.
    public func writeKV(qkv: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor, slotMapping: DeviceTensor, numHeads: Int, numKVHeads: Int, headDim: Int) {
        let n = qkv.shape[0], stride = qkv.shape.rowCount, kvSize = numKVHeads * headDim
        let slots = slotMapping.i32, src = qkv.f32, kc = kCache.f32, vc = vCache.f32
        let capacity = kCache.shape[0]
        for i in 0..<n {
            let slot = Int(slots[i])
            if slot < 0 { continue }
            precondition(slot < capacity, "KV slot \(slot) is outside the cache of \(capacity)")
            let row = src + i * stride + numHeads * headDim
            (kc + slot * kvSize).update(from: row, count: kvSize)
            (vc + slot * kvSize).update(from: row + kvSize, count: kvSize)
        }
    }

    public func attention(qkv: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor, out: DeviceTensor, metadata: AttentionMetadata, numHeads: Int, numKVHeads: Int, headDim: Int) {
        let stride = qkv.shape.rowCount, kvSize = numKVHeads * headDim, oStride = out.shape.rowCount
        precondition(oStride >= numHeads * headDim, "attention: out \(out.shape) for \(numHeads) heads of \(headDim)")
        let group = numHeads / numKVHeads
        let q = qkv.f32, kc = kCache.f32, vc = vCache.f32, o = out.f32
        let starts = metadata.queryStarts.i32, lengths = metadata.contextLengths.i32
        let tables = metadata.blockTables.i32, tableWidth = metadata.blockTables.shape[1]
        let blockSize = metadata.blockSize
        let scale = 1 / sqrtf(Float(headDim))
        // One work item per (query row, head); each needs a scores buffer of the context length.
        let rowCount = Int(starts[metadata.numSequences])
        let total = rowCount * numHeads
        let maxContext = metadata.maxContextLength
        let numSequences = metadata.numSequences
        parallelFor(total, work: total * maxContext * headDim * 2) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: max(1, maxContext))
            defer { scores.deallocate() }
            var s = 0
            for item in range {
                let row = item / numHeads
                while s > 0 && Int(starts[s]) > row { s -= 1 }
                while s + 1 < numSequences && Int(starts[s + 1]) <= row { s += 1 }
                let h = item % numHeads, kvh = h / group
                let context = Int(lengths[s])
                let queryCount = Int(starts[s + 1] - starts[s])
                let visible = context - queryCount + (row - Int(starts[s])) + 1
                let qv = q + row * stride + h * headDim
                let table = tables + s * tableWidth
                var maxScore = -Float.infinity
                for t in 0..<visible {
                    let slot = Int(table[t / blockSize]) * blockSize + t % blockSize
                    let sc = Kernels.dot(qv, kc + slot * kvSize + kvh * headDim, headDim) * scale
                    scores[t] = sc
                    maxScore = max(maxScore, sc)
                }
                var sum: Float = 0
                for t in 0..<visible {
                    let e = expf(scores[t] - maxScore)
                    scores[t] = e
                    sum += e
                }
                let ov = o + row * oStride + h * headDim
                ov.update(repeating: 0, count: headDim)
                let inv = 1 / sum
                for t in 0..<visible {
                    let slot = Int(table[t / blockSize]) * blockSize + t % blockSize
                    Kernels.axpy(scores[t] * inv, vc + slot * kvSize + kvh * headDim, ov, headDim)
                }
            }
        }
    }

    public func siluMul(_ gateUp: DeviceTensor, out: DeviceTensor, lora: LoRADelta?) {
        let n = gateUp.shape[0], stride = gateUp.shape.rowCount, width = (lora?.width ?? stride) / 2, oStride = out.shape.rowCount
        precondition(stride >= 2 * width && oStride >= width, "siluMul: \(gateUp.shape) into \(out.shape)")
        let g = gateUp.f32, o = out.f32
        parallelFor(n, work: n * width * 10) { rows in
            // The row with its delta added (gateUp itself stays as it is).
            let row = lora == nil ? nil : UnsafeMutablePointer<Float>.allocate(capacity: 2 * width)
            defer { row?.deallocate() }
            for i in rows {
                var gi = UnsafePointer(g + i * stride)
                if let lora, let row {
                    row.update(from: gi, count: 2 * width)
                    lora.add(row: i, xa: gi + 2 * width, to: row, columns: 0..<(2 * width))
                    gi = UnsafePointer(row)
                }
                let oi = o + i * oStride
                for j in 0..<width {
                    let x = gi[j]
                    oi[j] = (x / (1 + expf(-x))) * gi[width + j]
                }
            }
        }
    }

    public func gatherRows(_ x: DeviceTensor, rows: DeviceTensor, out: DeviceTensor) {
        let d = x.shape.rowCount, src = x.f32, dst = out.f32, idx = rows.i32
        for j in 0..<rows.count {
            (dst + j * d).update(from: src + Int(idx[j]) * d, count: d)
        }
    }

    /// A copy: every float tensor of this backend is f32.
    public func convert(_ x: DeviceTensor, out: DeviceTensor) {
        precondition(out.count == x.count, "convert: \(x.shape) into \(out.shape)")
        out.f32.update(from: x.f32, count: x.count)  // f32 on both sides (`f32` checks)
    }

    public func allocateHost(byteCount: Int) throws -> HostBuffer {
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        return HostBuffer(pointer: pointer, byteCount: byteCount) { $0.deallocate() }
    }

    /// A plain copy: the CPU backend has no copy engine to overlap.
    public func uploadAsync(from source: HostBuffer, offset: Int, pitch: Int, to destination: DeviceTensor, column: Int, rows: Int, rowBytes: Int) {
        let elementBytes = destination.dtype.byteCount, destinationPitch = destination.shape.rowCount * elementBytes
        precondition(column >= 0 && column * elementBytes + rowBytes <= destinationPitch && rows <= destination.shape[0]
                     && offset + (rows - 1) * pitch + rowBytes <= source.byteCount,
                     "uploadAsync: \(rows) rows of \(rowBytes) B into \(destination.shape) from column \(column)")
        let base = destination.raw + column * elementBytes
        for r in 0..<rows {
            (base + r * destinationPitch).copyMemory(from: source.pointer + offset + r * pitch, byteCount: rowBytes)
        }
    }

    public func fenceUploads() {}

    public func argmax(_ logits: DeviceTensor, out: DeviceTensor) {
        let n = logits.shape[0], v = logits.shape.rowCount, x = logits.f32, o = out.i32
        precondition(out.count >= n, "argmax: \(n) rows into \(out.shape)")
        for r in 0..<n { o[r] = Int32(UnsafeBufferPointer(start: x + r * v, count: v).firstArgmax) }
    }

    public func zero(_ t: DeviceTensor) {
        t.raw.initializeMemory(as: UInt8.self, repeating: 0, count: t.count * t.dtype.byteCount)
    }

    public func synchronize() {}
}
