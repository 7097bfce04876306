import CPUBackend
import CUDABackend
import Foundation
import LoomCore
import LoRA

/// Each CUDA op against the CPU backend on the same inputs: inputs are drawn at random, rounded to
/// bf16, and given to both backends (the CPU one in f32). Outputs are compared by relative L2 error
/// ‖gpu − cpu‖ / ‖cpu‖ and max abs error; copies must be exact.
struct OpChecks {
    let gpu: CUDABackend
    let cpu = CPUBackend()
    var rng = SplitMix(seed: 0x5EED)

    init(gpu: CUDABackend) { self.gpu = gpu }

    struct SplitMix {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) * 2 - 1 }
        mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    /// The same bf16-rounded random values on both backends.
    mutating func pair(_ shape: Shape, scale: Float = 1, weight: Bool = false) -> (DeviceTensor, DeviceTensor, [Float]) {
        let values = (0..<shape.count).map { _ in HalfConversion.bf16ToFloat(HalfConversion.floatToBF16(rng.uniform() * scale)) }
        let c = try! cpu.allocate(shape, dtype: .f32)
        cpu.copy(values, to: c)
        let g = try! gpu.allocate(shape, dtype: .bf16)
        gpu.copy(values, to: g)
        return (c, g, values)
    }

    func ints(_ values: [Int32]) -> (DeviceTensor, DeviceTensor) {
        let c = try! cpu.allocate(Shape(max(1, values.count)), dtype: .i32)
        let g = try! gpu.allocate(Shape(max(1, values.count)), dtype: .i32)
        cpu.copy(values, to: c)
        gpu.copy(values, to: g)
        return (c.rows(values.count), g.rows(values.count))
    }

    func floats32(_ values: [Float]) -> (DeviceTensor, DeviceTensor) {
        let c = try! cpu.allocate(Shape(values.count), dtype: .f32)
        let g = try! gpu.allocate(Shape(values.count), dtype: .f32)
        cpu.copy(values, to: c)
        gpu.copy(values, to: g)
        return (c, g)
    }

    func zeros(_ shape: Shape, gpuDType: DType = .bf16) -> (DeviceTensor, DeviceTensor) {
        (try! cpu.allocate(shape, dtype: .f32), try! gpu.allocate(shape, dtype: gpuDType))
    }

    func compare(_ name: String, _ c: DeviceTensor, _ g: DeviceTensor, tolerance: Double, detail: String = "") -> [String: Any] {
        compare(name, cpu.download(c), gpu.download(g), tolerance: tolerance, detail: detail)
    }

    /// The CPU's values `a` against the GPU's `b`: relative L2 within `tolerance` (0: exact), every
    /// GPU value finite, and (`nonzero`) a reference that is not all zeros.
    func compare(_ name: String, _ a: [Float], _ b: [Float], tolerance: Double, detail: String = "", nonzero: Bool = false) -> [String: Any] {
        var diff = 0.0, norm = 0.0, maxAbs = 0.0
        var finite = true
        for (x, y) in zip(a, b) {
            if !y.isFinite { finite = false }
            diff += Double(x - y) * Double(x - y)
            norm += Double(x) * Double(x)
            maxAbs = max(maxAbs, Double(abs(x - y)))
        }
        let rel = norm > 0 ? (diff / norm).squareRoot() : diff.squareRoot()
        let pass = finite && a.count == b.count && (!nonzero || norm > 0) && (tolerance == 0 ? maxAbs == 0 : rel <= tolerance)
        return ["op": name, "detail": detail, "rel_l2": rel, "max_abs": maxAbs, "tolerance_rel_l2": tolerance, "elements": a.count, "pass": pass]
    }

    mutating func run() -> [[String: Any]] {
        var results: [[String: Any]] = []
        // embed: a copy, exact.
        do {
            let (tc, tg, _) = pair(Shape(1000, 136))
            let ids = (0..<7).map { _ in Int32(rng.int(1000)) }
            let (ic, ig) = ints(ids)
            let (oc, og) = zeros(Shape(7, 136))
            cpu.embed(tokens: ic, table: tc, out: oc)
            gpu.embed(tokens: ig, table: tg, out: og)
            results.append(compare("embed", oc, og, tolerance: 0, detail: "7 of 1000×136"))
        }
        // Outputs of d columns, and wider ones (a fused GEMM's wide input: the first d columns
        // written), and copies of those (split extensions' inputs, every copy written).
        for (d, outWidth, copies) in [(4096, 4096, 1), (4096, 4136, 1), (96, 96, 1), (96, 136, 1), (4096, 4160, 2), (96, 104, 2)] {
            let detail = "5×\(d)" + (outWidth > d ? " into rows of \(outWidth)" : "") + (copies > 1 ? " × \(copies) copies" : "")
            let (xc, xg, _) = pair(Shape(5, d), scale: 3)
            let (wc, wg, _) = pair(Shape(d))
            let outShape = copies > 1 ? Shape(copies, 5, outWidth) : Shape(5, outWidth)
            let (oc, og) = zeros(outShape)
            gpu.zero(og)
            cpu.rmsNorm(xc, weight: wc, eps: 1e-5, out: oc)
            gpu.rmsNorm(xg, weight: wg, eps: 1e-5, out: og)
            results.append(compare("rmsNorm", oc, og, tolerance: 1e-2, detail: detail))
            let (rc, rg, _) = pair(Shape(5, d), scale: 2)
            let (oc2, og2) = zeros(outShape)
            gpu.zero(og2)
            cpu.addRMSNorm(residual: rc, xc, weight: wc, eps: 1e-5, out: oc2)
            gpu.addRMSNorm(residual: rg, xg, weight: wg, eps: 1e-5, out: og2)
            results.append(compare("addRMSNorm.residual", rc, rg, tolerance: 1e-2, detail: detail))
            results.append(compare("addRMSNorm.out", oc2, og2, tolerance: 1e-2, detail: detail))
        }
        // Add-and-norm on a block a row and on a cluster of 4 (`usesClusterNorm`), from x and from K-slices.
        let clusterNorm = gpu.usesClusterNorm
        for (n, d, count) in [(32, 4096, 0), (32, 4096, 2), (5, 96, 0), (7, 4096, 3)] {
            for cluster in [false, true] {
                gpu.usesClusterNorm = cluster
                let (xc, xg, xv) = pair(Shape(count > 0 ? count : 1, n, d), scale: 3)
                let (wc, wg, _) = pair(Shape(d))
                let (rc, rg, _) = pair(Shape(n, d), scale: 2)
                let (oc, og) = zeros(Shape(n, d))
                gpu.zero(og)
                if count > 0 {
                    let (sc, sg) = floats32(xv)
                    cpu.addRMSNorm(residual: rc, slices: sc.reshaped(Shape(count, n, d)), weight: wc, eps: 1e-5, out: oc)
                    gpu.addRMSNorm(residual: rg, slices: sg.reshaped(Shape(count, n, d)), weight: wg, eps: 1e-5, out: og)
                } else {
                    cpu.addRMSNorm(residual: rc, xc.reshaped(Shape(n, d)), weight: wc, eps: 1e-5, out: oc)
                    gpu.addRMSNorm(residual: rg, xg.reshaped(Shape(n, d)), weight: wg, eps: 1e-5, out: og)
                }
                let detail = "\(n)×\(d)" + (count > 0 ? " from \(count) slices" : "") + (cluster ? ", a cluster of 4 blocks a row" : ", a block a row")
                results.append(compare("addRMSNorm.residual", rc, rg, tolerance: 1e-2, detail: detail))
                results.append(compare("addRMSNorm.out", oc, og, tolerance: 1e-2, detail: detail))
            }
        }
        gpu.usesClusterNorm = clusterNorm
        // Up to maxGEMVRows (3) rows run loom_gemv (k a multiple of 8: 16-byte loads; else a plain
        // loop), the rest cuBLASLt; 4-row cases run on both (LOOM_GEMV_ROWS=4 takes loom_gemv to 4).
        let gemvRows = gpu.maxGEMVRows
        for (n, k, m, bias, f32) in [(1, 4096, 6144, false, false), (7, 344, 128, false, false), (33, 128, 512, false, false),
                                     (128, 96, 224, true, false), (32, 4096, 14336, false, false), (4, 4096, 4097, false, false),
                                     (2, 1000, 1000, false, true), (3, 14336, 4096, false, false), (1, 2048, 5000, false, true),
                                     (4, 344, 72, true, false), (2, 72, 30, false, false), (3, 172, 128, false, false), (1, 4100, 200, false, true)] {
            let (xc, xg, _) = pair(Shape(n, k))
            let (wc, wg, _) = pair(Shape(m, k), scale: 0.05)
            let b = bias ? pair(Shape(m)) : nil
            for limit in n == 4 && gemvRows < 4 ? [gemvRows, 4] : [gemvRows] {
                gpu.maxGEMVRows = limit
                let (oc, og) = zeros(Shape(n, m), gpuDType: f32 ? .f32 : .bf16)
                cpu.linear(xc, weight: wc, bias: b?.0, out: oc)
                gpu.linear(xg, weight: wg, bias: b?.1, out: og)
                let path = n <= limit ? "gemv" : "cuBLASLt"
                results.append(compare("linear", oc, og, tolerance: f32 ? 1e-4 : 1e-2,
                                       detail: "\(n)×\(k) · (\(m)×\(k))ᵀ\(bias ? " + bias" : "")\(f32 ? " → f32" : ""), \(path)"))
            }
            gpu.maxGEMVRows = gemvRows
        }
        // K-slices of o and down (batched cuBLASLt into f32), one case on a weight wider than x (a
        // LoRA-extended one), and their sum inside addRMSNorm (16-byte vectors, and d = 100's scalar loop).
        for (n, k, m, count, extra) in [(32, 4096, 4096, 4, 0), (32, 14336, 4096, 4, 0), (7, 336, 200, 2, 0), (9, 4224, 512, 2, 64),
                                         (64, 1032, 96, 3, 0)] {
            let (xc, xg, _) = pair(Shape(n, k))
            let (wc, wg, _) = pair(Shape(m, k + extra), scale: 0.05)
            let (oc, og) = zeros(Shape(count, n, m), gpuDType: .f32)
            cpu.linearSlices(xc, weight: wc, out: oc)
            gpu.linearSlices(xg, weight: wg, out: og)
            results.append(compare("linearSlices", oc, og, tolerance: 1e-4, detail: "\(count) slices of \(n)×\(k) · (\(m)×\(k + extra))ᵀ → f32"))
        }
        // Stacked modules' GEMMs, each over its own input (`linearStacked`: gate/up with split
        // extensions), on weights as wide as x and wider.
        for (count, n, k, m, extra, f32) in [(2, 32, 4160, 14336, 0, false), (2, 7, 344, 96, 8, false), (2, 200, 4224, 1024, 64, false),
                                             (2, 64, 4160, 1024, 0, true)] {
            let (xc, xg, _) = pair(Shape(count, n, k))
            let (wc, wg, _) = pair(Shape(count * m, k + extra), scale: 0.05)
            let (oc, og) = zeros(Shape(n, count * m), gpuDType: f32 ? .f32 : .bf16)
            cpu.linearStacked(xc, weight: wc, out: oc)
            gpu.linearStacked(xg, weight: wg, out: og)
            results.append(compare("linearStacked", oc, og, tolerance: f32 ? 1e-4 : 1e-2,
                                   detail: "\(count) × \(n)×\(k) · (\(m)×\(k + extra))ᵀ\(f32 ? " → f32" : "")"))
        }
        // The last into 2 copies of rows of d + 64 (split extensions' inputs).
        for (n, d, count, copies) in [(32, 4096, 4, 1), (5, 100, 3, 1), (3, 96, 2, 1), (32, 4096, 2, 2)] {
            let values = (0..<count * n * d).map { _ in rng.uniform() * 2 }
            let (sc, sg) = floats32(values)
            let (wc, wg, _) = pair(Shape(d))
            let (rc, rg, _) = pair(Shape(n, d), scale: 2)
            let (oc, og) = zeros(copies > 1 ? Shape(copies, n, d + 64) : Shape(n, d))
            gpu.zero(og)
            let shape = Shape(count, n, d), detail = "\(count) slices of \(n)×\(d)" + (copies > 1 ? " into \(copies) copies of rows of \(d + 64)" : "")
            cpu.addRMSNorm(residual: rc, slices: sc.reshaped(shape), weight: wc, eps: 1e-5, out: oc)
            gpu.addRMSNorm(residual: rg, slices: sg.reshaped(shape), weight: wg, eps: 1e-5, out: og)
            results.append(compare("addRMSNorm(slices).residual", rc, rg, tolerance: 1e-2, detail: detail))
            results.append(compare("addRMSNorm(slices).out", oc, og, tolerance: 1e-2, detail: detail))
        }
        // RoPE (plain, and Llama 3.1's scaled frequencies) and the cache write: 9 rows, one without a
        // slot, positions below 5000.
        // Each case once with a head a block and once with 5 (the last block part empty).
        let ropeHeads = gpu.ropeHeadsPerBlock
        defer { gpu.ropeHeadsPerBlock = ropeHeads }
        for (heads, kvHeads, headDim, scaled) in [(4, 2, 48, false), (4, 2, 48, true), (32, 8, 128, false), (32, 8, 128, true)] {
            for perBlock in [1, 5] {
                gpu.ropeHeadsPerBlock = perBlock
                let n = 9, stride = (heads + 2 * kvHeads) * headDim
                let (qc, qg, _) = pair(Shape(n, stride))
                let (pc, pg) = ints((0..<n).map { _ in Int32(rng.int(5000)) })
                let config = ModelConfig(architecture: .llama, vocabSize: 10, hiddenSize: heads * headDim, intermediateSize: 10, numLayers: 1,
                                         numHeads: heads, numKVHeads: kvHeads, headDim: headDim, ropeTheta: 500000,
                                         ropeScaling: scaled ? .init(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192) : nil)
                let (fc, fg) = floats32(config.ropeInverseFrequencies())
                let (kc, kg) = zeros(Shape(64, kvHeads * headDim)), (vc, vg) = zeros(Shape(64, kvHeads * headDim))
                let (sc, sg) = ints([5, 63, -1, 0, 17, 40, 1, 2, 62])
                cpu.ropeAndWriteKV(qkv: qc, positions: pc, inverseFrequencies: fc, kCache: kc, vCache: vc, slotMapping: sc,
                                   numHeads: heads, numKVHeads: kvHeads, headDim: headDim)
                gpu.ropeAndWriteKV(qkv: qg, positions: pg, inverseFrequencies: fg, kCache: kg, vCache: vg, slotMapping: sg,
                                   numHeads: heads, numKVHeads: kvHeads, headDim: headDim)
                let detail = "\(n) rows (one skipped), \(heads)+\(kvHeads) heads × \(headDim)\(scaled ? ", Llama 3.1 scaling" : ""), \(perBlock) a block"
                results.append(compare("ropeAndWriteKV.qkv", qc, qg, tolerance: 1e-2, detail: detail))
                results.append(compare("ropeAndWriteKV.k", kc, kg, tolerance: 1e-2, detail: detail))
                results.append(compare("ropeAndWriteKV.v", vc, vg, tolerance: 0, detail: detail))
            }
        }
        // attention: ragged prefill + decode in one batch, decode-only with long contexts (split), GQA groups 2/3/4/7
        // (decode-only batches of groups 3 to 8 and head_dim 64 or 128 run loom_attention_decode).
        // The last case runs inside a graph capture, where the splits are fixed by the block-table
        // capacity (capacityBlocks) and shared out by each row's own context on the device (the
        // engine's decode graphs).
        let attentionCases: [(String, Int, Int, Int, [(cached: Int, query: Int)], capacityBlocks: Int?)] = [
            ("mixed prefill+decode", 8, 2, 64, [(0, 17), (40, 5), (300, 1), (0, 1)], nil),
            ("prefill 2×128", 32, 8, 128, [(0, 128), (0, 128)], nil),
            ("decode 3 seqs, long (split)", 32, 8, 128, [(3000, 1), (700, 1), (129, 1)], nil),
            ("decode, group 7", 28, 4, 128, [(1000, 1), (5, 1)], nil),
            ("tiny head_dim 16", 6, 2, 16, [(3, 4), (20, 1)], nil),
            ("decode 32 seqs, head_dim 64", 32, 8, 64, (0..<32).map { (cached: $0 * 37 % 300, query: 1) }, nil),
            ("decode 32 seqs, group 3", 24, 8, 128, (0..<32).map { (cached: $0 * 53 % 500, query: 1) }, nil),
            // 64 × 8 (row, KV head) blocks fill the GPU: no splits, each block writes its rows itself.
            ("decode 64 seqs, one split", 32, 8, 128, (0..<64).map { (cached: $0 * 29 % 200, query: 1) }, nil),
            ("decode in a graph, capacity 4096", 32, 8, 128, [(3000, 1), (700, 1), (129, 1), (0, 1)], 256),
        ]
        // Decode-only cases run three times: on loom_attention_decode_mma_paged (a slot a step), on
        // loom_attention_decode_mma (a slot a token) and on the scalar decode kernel.
        let mma = gpu.usesDecodeAttentionMMA, paged = gpu.usesPagedDecodeAttention
        for (label, heads, kvHeads, headDim, seqs, capacityBlocks) in attentionCases {
            let kernels: [(mma: Bool, paged: Bool, suffix: String)] = seqs.allSatisfy({ $0.query == 1 })
                ? [(true, true, ""), (true, false, ", a slot a token"), (false, false, ", scalar decode kernel")] : [(mma, paged, "")]
            for kernel in kernels {
                gpu.usesDecodeAttentionMMA = kernel.mma
                gpu.usesPagedDecodeAttention = kernel.paged
                results.append(attentionCheck(label + kernel.suffix, heads: heads, kvHeads: kvHeads, headDim: headDim,
                                              seqs: seqs, capacityBlocks: capacityBlocks))
            }
        }
        gpu.usesPagedDecodeAttention = paged
        // Into rows wider than heads·d (a fused GEMM's wide input): prefill, decode split and not.
        for (label, seqs) in [("prefill 2×128", [(0, 128), (0, 128)]), ("decode 3 seqs, long (split)", [(3000, 1), (700, 1), (129, 1)]),
                              ("decode 64 seqs, one split", (0..<64).map { ($0 * 29 % 200, 1) })] as [(String, [(cached: Int, query: Int)])] {
            results.append(attentionCheck(label + ", into rows of 4096 + 200", heads: 32, kvHeads: 8, headDim: 128, seqs: seqs, outPadding: 200))
        }
        gpu.usesDecodeAttentionMMA = mma
        // Scalar and 8 columns a thread (the last block of 4,104 columns part empty; 340 takes the
        // scalar form either way).
        let vectorSiLU = gpu.usesVectorSiLU
        for (width, outWidth) in [(344, 344), (344, 368), (4104, 4104), (340, 340)] {
            for vector in [false, true] {
                gpu.usesVectorSiLU = vector
                let (gc, gg, _) = pair(Shape(3, 2 * width), scale: 4)
                let (oc, og) = zeros(Shape(3, outWidth))
                gpu.zero(og)
                cpu.siluMul(gc, out: oc)
                gpu.siluMul(gg, out: og)
                results.append(compare("siluMul", oc, og, tolerance: 1e-2,
                                       detail: "3×\(width)" + (outWidth > width ? " into rows of \(outWidth)" : "") + (vector ? ", 8 columns a thread" : "")))
            }
        }
        gpu.usesVectorSiLU = vectorSiLU
        do {
            let (xc, xg, _) = pair(Shape(10, 72))
            let (rc, rg) = ints([3, 0, 9])
            let (oc, og) = zeros(Shape(3, 72))
            cpu.gatherRows(xc, rows: rc, out: oc)
            gpu.gatherRows(xg, rows: rg, out: og)
            results.append(compare("gatherRows", oc, og, tolerance: 0, detail: "3 of 10×72"))
        }
        do {
            // f32 → bf16 rounds to nearest even (the host's rounding), bf16 → f32 is exact. Beside
            // random values of both signs: exact ties (1 + 2⁻⁸ rounds down to 1, 1 + 3·2⁻⁸ up), values
            // that round to ±infinity, infinities, zeros and a subnormal.
            let edges: [Float] = [1 + 0x1p-8, 1 + 3 * 0x1p-8, -(1 + 0x1p-8), .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                                  .infinity, -.infinity, 0, -0, 0x1p-130]
            let values = edges + (0..<(1000 - edges.count)).map { _ in rng.uniform() * 3 * (rng.uniform() < 0 ? -1 : 1) }
            let (_, source) = floats32(values)
            let rounded = values.map { HalfConversion.bf16ToFloat(HalfConversion.floatToBF16($0)) }
            let (_, half) = zeros(Shape(1000))
            let (_, back) = zeros(Shape(1000), gpuDType: .f32)
            gpu.convert(source, out: half)
            gpu.convert(half, out: back)
            // Bit for bit (compare() would call the infinities a failure).
            for (tensor, detail) in [(half, "1000 f32 → bf16"), (back, "1000 bf16 → f32")] {
                let mismatches = zip(rounded, gpu.download(tensor)).filter { $0.bitPattern != $1.bitPattern }.count
                results.append(["op": "convert", "detail": detail + ", ties, ±max, ±infinity, ±0, a subnormal", "mismatches": mismatches,
                                "pass": mismatches == 0])
            }
        }
        // argmax: rows split over blocks; bf16 and f32; rows not 16-byte aligned (odd vocab); planted
        // ties (lowest index wins), NaNs (never win) and an all-NaN row (0); each case run twice, as
        // the kernel's scratch must be left zero for the next launch.
        for (rows, vocab, f32) in [(4, 128_256, false), (1, 128_256, true), (33, 1_001, false), (3, 32_000, true), (2, 7, false)] {
            var values = (0..<rows * vocab).map { _ in HalfConversion.bf16ToFloat(HalfConversion.floatToBF16(rng.uniform() * 10)) }
            if rows >= 3 {
                let top = HalfConversion.bf16ToFloat(HalfConversion.floatToBF16(values.max()! + 1))
                values[vocab + vocab - 1] = top; values[vocab + vocab / 3] = top  // row 1: a tie, the lower index wins
                values[2 * vocab] = .nan; values[2 * vocab + 5] = .nan                // row 2: NaNs lose
            }
            if rows == 2 { for j in 0..<vocab { values[vocab + j] = .nan } }       // row 1: all NaN → 0
            let lg = try! gpu.allocate(Shape(rows, vocab), dtype: f32 ? .f32 : .bf16)
            gpu.copy(values, to: lg)
            let want = (0..<rows).map { r -> Int32 in
                var best = -1
                for j in 0..<vocab where !values[r * vocab + j].isNaN && (best < 0 || values[r * vocab + j] > values[r * vocab + best]) { best = j }
                return Int32(max(best, 0))
            }
            let ids = try! gpu.allocate(Shape(rows), dtype: .i32)
            for run in 1...2 {
                gpu.argmax(lg, out: ids)
                let got = gpu.downloadInts(ids)
                results.append(["op": "argmax", "detail": "\(rows)×\(vocab) \(f32 ? "f32" : "bf16"), run \(run)", "pass": got == want,
                                "got": got.prefix(8).map(Int.init), "expected": want.prefix(8).map(Int.init)])
            }
        }
        results += loraChecks()
        results += loraDeltaChecks()
        return results
    }

    /// `outPadding`: out's rows that many columns wider than heads·d (left zero).
    mutating func attentionCheck(_ label: String, heads: Int, kvHeads: Int, headDim: Int, seqs: [(cached: Int, query: Int)],
                                 capacityBlocks: Int? = nil, outPadding: Int = 0) -> [String: Any] {
        let blockSize = 16
        let n = seqs.reduce(0) { $0 + $1.query }
        let blocksPer = seqs.map { ($0.cached + $0.query + blockSize - 1) / blockSize }
        let totalBlocks = blocksPer.reduce(0, +)
        let width = max(blocksPer.max()!, capacityBlocks ?? 0)
        // Blocks handed out in a shuffled order, as a paged cache would.
        var order = Array(0..<totalBlocks)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.int(i + 1)) }
        var tables: [Int32] = [], starts: [Int32] = [0], lengths: [Int32] = []
        var next = 0
        for (s, seq) in seqs.enumerated() {
            var row = [Int32](repeating: 0, count: width)
            for b in 0..<blocksPer[s] { row[b] = Int32(order[next]); next += 1 }
            tables += row
            starts.append(starts.last! + Int32(seq.query))
            lengths.append(Int32(seq.cached + seq.query))
        }
        let kvSize = kvHeads * headDim
        let (qc, qg, _) = pair(Shape(n, (heads + 2 * kvHeads) * headDim), scale: 2)
        let (kc, kg, _) = pair(Shape(totalBlocks * blockSize, kvSize), scale: 2)
        let (vc, vg, _) = pair(Shape(totalBlocks * blockSize, kvSize))
        let (tc, tg) = ints(tables), (sc, sg) = ints(starts), (lc, lg) = ints(lengths)
        func meta(_ t: DeviceTensor, _ s: DeviceTensor, _ l: DeviceTensor) -> AttentionMetadata {
            AttentionMetadata(queryStarts: s, contextLengths: l, blockTables: t.reshaped(Shape(seqs.count, width)),
                              numSequences: seqs.count, maxQueryLength: seqs.map(\.query).max()!,
                              maxContextLength: Int(lengths.max()!), blockSize: blockSize)
        }
        let (oc, og) = zeros(Shape(n, heads * headDim + outPadding))
        gpu.zero(og)
        cpu.attention(qkv: qc, kCache: kc, vCache: vc, out: oc, metadata: meta(tc, sc, lc), numHeads: heads, numKVHeads: kvHeads, headDim: headDim)
        if capacityBlocks != nil {
            let gpu = self.gpu, metadata = meta(tg, sg, lg)
            gpu.withGraph(key: "attention-check-\(label)") {
                gpu.attention(qkv: qg, kCache: kg, vCache: vg, out: og, metadata: metadata, numHeads: heads, numKVHeads: kvHeads, headDim: headDim)
            }
        } else {
            gpu.attention(qkv: qg, kCache: kg, vCache: vg, out: og, metadata: meta(tg, sg, lg), numHeads: heads, numKVHeads: kvHeads, headDim: headDim)
        }
        return compare("attention", oc, og, tolerance: 1e-2, detail: "\(label): \(heads)/\(kvHeads) heads × \(headDim), seqs (cached, query) \(seqs.map { "(\($0.cached),\($0.query))" }.joined(separator: " "))")
    }
}

extension Array {
    /// A fixed shuffle (a seeded Fisher–Yates), so a check sees the same rows every run.
    func shuffledDeterministically() -> [Element] {
        var copy = self
        var rng = OpChecks.SplitMix(seed: 99)
        for i in stride(from: copy.count - 1, to: 0, by: -1) { copy.swapAt(i, rng.int(i + 1)) }
        return copy
    }
}
