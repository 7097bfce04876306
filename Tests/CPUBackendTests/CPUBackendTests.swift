import CPUBackend
import Foundation
import LoomCore
import Testing

/// Each CPU op against a naive Swift reference written from the op's doc comment.
@Suite struct CPUBackendTests {
    let b = CPUBackend()

    struct Rng {
        var state: UInt64
        mutating func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2000 - 1000) / 1000
        }
        mutating func array(_ n: Int) -> [Float] { (0..<n).map { _ in next() } }
    }

    func tensor(_ values: [Float], _ shape: Int...) throws -> DeviceTensor {
        let t = try b.allocate(Shape(shape), dtype: .f32)
        b.copy(values, to: t)
        return t
    }

    func ints(_ values: [Int32], _ shape: Int...) throws -> DeviceTensor {
        let t = try b.allocate(Shape(shape), dtype: .i32)
        b.copy(values, to: t)
        return t
    }

    func maxDiff(_ a: [Float], _ c: [Float]) -> Float { zip(a, c).reduce(0) { max($0, abs($1.0 - $1.1)) } }

    @Test(arguments: [(1, 7, 5), (5, 64, 33), (9, 130, 17), (64, 256, 96)])
    func linearMatchesNaive(n: Int, k: Int, outputs: Int) throws {
        var rng = Rng(state: UInt64(n * 1000 + k))
        let x = rng.array(n * k), w = rng.array(outputs * k), bias = rng.array(outputs)
        let out = try b.allocate(Shape(n, outputs), dtype: .f32)
        b.linear(try tensor(x, n, k), weight: try tensor(w, outputs, k), bias: try tensor(bias, outputs), out: out)
        var expected = [Float](repeating: 0, count: n * outputs)
        for i in 0..<n { for o in 0..<outputs {
            var s: Double = 0
            for j in 0..<k { s += Double(x[i * k + j]) * Double(w[o * k + j]) }
            expected[i * outputs + o] = Float(s) + bias[o]
        } }
        #expect(maxDiff(b.download(out), expected) < 1e-4)
    }

    /// Parts stacked by rows upload as their concatenation would (the protocol's host-side default).
    @Test func uploadWeightsStacksParts() throws {
        var rng = Rng(state: 5)
        let a = rng.array(2 * 3), c = rng.array(3 * 3)
        let stacked = try a.withUnsafeBytes { pa in
            try c.withUnsafeBytes { pc in try b.uploadWeights(stacking: [pa, pc], dtype: .f32, shape: Shape(5, 3)) }
        }
        #expect(stacked.shape == Shape(5, 3) && b.download(stacked) == a + c)
        let one = try a.withUnsafeBytes { try b.uploadWeights(stacking: [$0], dtype: .f32, shape: Shape(2, 3)) }
        #expect(b.download(one) == a)
    }

    /// Every float tensor of the CPU backend is f32, so `convert` is an exact copy.
    @Test func convertCopies() throws {
        var rng = Rng(state: 11)
        let values = rng.array(12) + [0, -0, .infinity, -.greatestFiniteMagnitude]
        let out = try b.allocate(Shape(4, 4), dtype: .f32)
        b.convert(try tensor(values, 4, 4), out: out)
        #expect(b.download(out) == values)
    }

    @Test func addRMSNormUpdatesTheResidual() throws {
        var rng = Rng(state: 3)
        let n = 3, d = 10
        let r = rng.array(n * d), x = rng.array(n * d), w = rng.array(d)
        let residual = try tensor(r, n, d), out = try b.allocate(Shape(n, d), dtype: .f32)
        b.addRMSNorm(residual: residual, try tensor(x, n, d), weight: try tensor(w, d), eps: 1e-5, out: out)
        let sum = zip(r, x).map { $0 + $1 }
        var expected = [Float](repeating: 0, count: n * d)
        for i in 0..<n {
            let row = sum[(i * d)..<((i + 1) * d)]
            let scale = 1 / (row.reduce(0) { $0 + $1 * $1 } / Float(d) + 1e-5).squareRoot()
            for j in 0..<d { expected[i * d + j] = w[j] * sum[i * d + j] * scale }
        }
        #expect(maxDiff(b.download(residual), sum) == 0)
        #expect(maxDiff(b.download(out), expected) < 1e-5)
    }

    /// The norms into copies of wider rows (`[copies, n, width]`, split fused inputs): each copy's
    /// first d columns get the rows into `[n, d]`, the columns after them stay as they were.
    @Test func normsWriteEveryCopyOfWiderRows() throws {
        var rng = Rng(state: 4)
        let n = 3, d = 10, width = 14, copies = 2
        let x = rng.array(n * d), w = rng.array(d), r = rng.array(n * d), filler = rng.array(copies * n * width)
        let plain = try b.allocate(Shape(n, d), dtype: .f32), wide = try tensor(filler, copies, n, width)
        #expect(wide.outputCopies.count == copies && wide.outputCopies.stride == n * width && wide.outputCopies.first.shape == Shape(n, width))
        #expect(plain.outputCopies.count == 1 && plain.outputCopies.first.isSameView(as: plain))
        func check(_ op: String) {
            let expected = b.download(plain), got = b.download(wide)
            for c in 0..<copies {
                for i in 0..<n {
                    let row = Array(got[(c * n + i) * width..<(c * n + i + 1) * width])
                    #expect(maxDiff(Array(row[0..<d]), Array(expected[i * d..<(i + 1) * d])) == 0, "\(op) copy \(c) row \(i)")
                    #expect(Array(row[d...]) == Array(filler[(c * n + i) * width + d..<(c * n + i + 1) * width]), "\(op) copy \(c) row \(i)")
                }
            }
        }
        b.rmsNorm(try tensor(x, n, d), weight: try tensor(w, d), eps: 1e-5, out: plain)
        b.rmsNorm(try tensor(x, n, d), weight: try tensor(w, d), eps: 1e-5, out: wide)
        check("rmsNorm")
        b.addRMSNorm(residual: try tensor(r, n, d), try tensor(x, n, d), weight: try tensor(w, d), eps: 1e-5, out: plain)
        b.addRMSNorm(residual: try tensor(r, n, d), try tensor(x, n, d), weight: try tensor(w, d), eps: 1e-5, out: wide)
        check("addRMSNorm")
        let slices = try tensor(rng.array(2 * n * d), 2, n, d)
        b.addRMSNorm(residual: try tensor(r, n, d), slices: slices, weight: try tensor(w, d), eps: 1e-5, out: plain)
        b.addRMSNorm(residual: try tensor(r, n, d), slices: slices, weight: try tensor(w, d), eps: 1e-5, out: wide)
        check("addRMSNorm(slices:)")
    }

    /// `copyColumns` into copies `[copies, n, width]`: every copy's rows get x at the column.
    @Test func copyColumnsWritesEveryCopy() throws {
        var rng = Rng(state: 6)
        let n = 3, d = 4, width = 9, column = 2, copies = 2
        let x = rng.array(n * d), filler = rng.array(copies * n * width)
        let wide = try tensor(filler, copies, n, width)
        b.copyColumns(try tensor(x, n, d), into: wide, column: column)
        var expected = filler
        for c in 0..<copies { for i in 0..<n { for j in 0..<d { expected[(c * n + i) * width + column + j] = x[i * d + j] } } }
        #expect(b.download(wide) == expected)
    }

    /// `linearSlices` cut from a weight wider than x: the slices sum to `linear`, and
    /// `addRMSNorm(residual:slices:…)` on them equals `addRMSNorm` on that sum.
    @Test func linearSlicesSumToLinearInsideAddRMSNorm() throws {
        var rng = Rng(state: 5)
        let n = 5, k = 12, m = 7, extra = 4, count = 3
        let x = try tensor(rng.array(n * k), n, k), w = try tensor(rng.array(m * (k + extra)), m, k + extra)
        let slices = try b.allocate(Shape(count, n, m), dtype: .f32), full = try b.allocate(Shape(n, m), dtype: .f32)
        b.linearSlices(x, weight: w, out: slices)
        b.linear(x, weight: w, bias: nil, out: full)
        let parts = b.download(slices)
        let summed = (0..<n * m).map { i in (0..<count).reduce(Float(0)) { $0 + parts[$1 * n * m + i] } }
        #expect(maxDiff(summed, b.download(full)) < 1e-5)
        // Each slice is its own third of K, not the whole product split evenly.
        #expect(maxDiff(Array(parts[0..<n * m]), summed) > 1e-3)

        let r = rng.array(n * m), g = rng.array(m)
        let viaSlices = try tensor(r, n, m), viaSum = try tensor(r, n, m)
        let out1 = try b.allocate(Shape(n, m), dtype: .f32), out2 = try b.allocate(Shape(n, m), dtype: .f32)
        b.addRMSNorm(residual: viaSlices, slices: slices, weight: try tensor(g, m), eps: 1e-5, out: out1)
        b.addRMSNorm(residual: viaSum, try tensor(summed, n, m), weight: try tensor(g, m), eps: 1e-5, out: out2)
        #expect(maxDiff(b.download(viaSlices), b.download(viaSum)) == 0)
        #expect(maxDiff(b.download(out1), b.download(out2)) == 0)
    }

    /// Two sequences in paged KV with scattered blocks: one prefilling a chunk on top of cached
    /// tokens, one decoding; attention equals a dense causal softmax over each sequence's tokens.
    @Test func pagedAttentionMatchesDenseCausalAttention() throws {
        let heads = 4, kvHeads = 2, d = 8, blockSize = 4
        let stride = (heads + 2 * kvHeads) * d
        var rng = Rng(state: 11)
        // Sequence 0: 6 cached tokens + 3 new; sequence 1: 9 cached + 1 new.
        let contexts = [9, 10], queries = [3, 1]
        let tables: [[Int32]] = [[5, 2, 7], [0, 3, 6]]
        let numBlocks = 8
        var kAll = [[Float]](), vAll = [[Float]]()
        for s in 0..<2 {
            kAll.append(rng.array(contexts[s] * kvHeads * d))
            vAll.append(rng.array(contexts[s] * kvHeads * d))
        }
        let kCache = try b.allocate(Shape(numBlocks * blockSize, kvHeads * d), dtype: .f32)
        let vCache = try b.allocate(Shape(numBlocks * blockSize, kvHeads * d), dtype: .f32)
        var kHost = [Float](repeating: 0, count: numBlocks * blockSize * kvHeads * d), vHost = kHost
        for s in 0..<2 {
            for t in 0..<contexts[s] {
                let slot = Int(tables[s][t / blockSize]) * blockSize + t % blockSize
                for j in 0..<(kvHeads * d) {
                    kHost[slot * kvHeads * d + j] = kAll[s][t * kvHeads * d + j]
                    vHost[slot * kvHeads * d + j] = vAll[s][t * kvHeads * d + j]
                }
            }
        }
        b.copy(kHost, to: kCache)
        b.copy(vHost, to: vCache)
        let rows = queries.reduce(0, +)
        let qkvHost = rng.array(rows * stride)
        let qkv = try tensor(qkvHost, rows, stride)
        let out = try b.allocate(Shape(rows, heads * d), dtype: .f32)
        let metadata = AttentionMetadata(
            queryStarts: try ints([0, 3, 4], 3), contextLengths: try ints(contexts.map(Int32.init), 2),
            blockTables: try ints(tables.flatMap { $0 }, 2, 3), numSequences: 2, maxQueryLength: 3,
            maxContextLength: 10, blockSize: blockSize)
        b.attention(qkv: qkv, kCache: kCache, vCache: vCache, out: out, metadata: metadata, numHeads: heads, numKVHeads: kvHeads, headDim: d)
        var expected = [Float](repeating: 0, count: rows * heads * d)
        var row = 0
        for s in 0..<2 {
            for qi in 0..<queries[s] {
                let visible = contexts[s] - queries[s] + qi + 1
                for h in 0..<heads {
                    let kvh = h / (heads / kvHeads)
                    var scores = (0..<visible).map { t -> Double in
                        var dot: Double = 0
                        for j in 0..<d { dot += Double(qkvHost[row * stride + h * d + j]) * Double(kAll[s][(t * kvHeads + kvh) * d + j]) }
                        return dot / Double(d).squareRoot()
                    }
                    let m = scores.max()!
                    scores = scores.map { exp($0 - m) }
                    let total = scores.reduce(0, +)
                    for j in 0..<d {
                        var acc: Double = 0
                        for t in 0..<visible { acc += scores[t] / total * Double(vAll[s][(t * kvHeads + kvh) * d + j]) }
                        expected[row * heads * d + h * d + j] = Float(acc)
                    }
                }
                row += 1
            }
        }
        #expect(maxDiff(b.download(out), expected) < 1e-5)
    }

    @Test func ropeRotatesHalvesLikeTransformers() throws {
        let heads = 1, kvHeads = 1, d = 4
        let qkv = try tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9], 1, 12)
        b.rope(qkv: qkv, positions: try ints([3], 1), inverseFrequencies: try tensor([1, 0.5], 2), numHeads: heads, numKVHeads: kvHeads, headDim: d)
        let got = b.download(qkv)
        // q = [x1 | x2] → [x1·cos − x2·sin | x2·cos + x1·sin] with angles 3·1 and 3·0.5.
        let a0: Float = 3, a1: Float = 1.5
        let expectedQ: [Float] = [1 * cos(a0) - 3 * sin(a0), 2 * cos(a1) - 4 * sin(a1), 3 * cos(a0) + 1 * sin(a0), 4 * cos(a1) + 2 * sin(a1)]
        #expect(maxDiff(Array(got[0..<4]), expectedQ) < 1e-6)
        #expect(Array(got[8..<12]) == [9, 9, 9, 9], "v is not rotated")
    }

    @Test func loraShrinkAndExpandFollowThePlan() throws {
        // Rows 0..3 with slots [1, 0, 1, 1]; slot 0 has rank 0 (base), slot 1 rank 2 of max 3.
        let n = 4, k = 5, out = 6, maxRank = 3, slots = 2
        var rng = Rng(state: 5)
        let x = rng.array(n * k), a = rng.array(slots * maxRank * k), bw = rng.array(slots * out * maxRank)
        let y = try b.allocate(Shape(n, maxRank), dtype: .f32)
        let outValues = rng.array(n * out)
        let o = try tensor(outValues, n, out)
        let plan = LoRAKernelPlan(permutation: try ints([1, 0, 2, 3], 4), segmentStarts: try ints([0, 1, 3, 4], 4),
                                  segmentSlots: try ints([0, 1, 1], 3), slotRanks: try ints([0, 2], 2), numSegments: 3, maxRank: 2)
        b.loraShrink(try tensor(x, n, k), a: try tensor(a, slots, maxRank, k), out: y, plan: plan, stack: 1)
        b.loraExpand(y, b: try tensor(bw, slots, out, maxRank), out: o, plan: plan, scalings: try tensor([9, 0.5], slots, 1), outOffsets: [0, out])
        var expected = outValues
        for row in [0, 2, 3] {
            let shrunk = (0..<2).map { r in (0..<k).reduce(Float(0)) { $0 + a[(maxRank + r) * k + $1] * x[row * k + $1] } }
            for c in 0..<out {
                expected[row * out + c] += 0.5 * (0..<2).reduce(Float(0)) { $0 + bw[(out + c) * maxRank + $1] * shrunk[$1] }
            }
        }
        #expect(maxDiff(b.download(o), expected) < 1e-5)
        #expect(Array(b.download(o)[out..<(2 * out)]) == Array(outValues[out..<(2 * out)]), "the base row is untouched")
    }
}
