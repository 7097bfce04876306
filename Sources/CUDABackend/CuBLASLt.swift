import Foundation

/// cuBLASLt, resolved from `libcublasLt.so` at run time: the dense projections `out = x · Wᵀ`.
final class CuBLASLt: @unchecked Sendable {
    typealias Handle = OpaquePointer?

    let library: DynamicLibrary
    private let cublasLtCreate: @convention(c) (UnsafeMutablePointer<Handle>) -> Int32
    private let cublasLtGetVersion: @convention(c) () -> Int
    private let cublasLtMatmulDescCreate: @convention(c) (UnsafeMutablePointer<Handle>, Int32, Int32) -> Int32
    private let cublasLtMatmulDescSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Int32
    private let cublasLtMatrixLayoutCreate: @convention(c) (UnsafeMutablePointer<Handle>, Int32, UInt64, UInt64, Int64) -> Int32
    private let cublasLtMatrixLayoutSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Int32
    private let cublasLtMatmulPreferenceCreate: @convention(c) (UnsafeMutablePointer<Handle>) -> Int32
    private let cublasLtMatmulPreferenceSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Int32
    private let cublasLtMatmulAlgoGetHeuristic: @convention(c) (Handle, Handle, Handle, Handle, Handle, Handle, Handle, Int32,
                                                                UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> Int32
    private let cublasLtMatmulAlgoConfigGetAttribute: @convention(c) (UnsafeRawPointer, Int32, UnsafeMutableRawPointer, Int,
                                                                      UnsafeMutablePointer<Int>?) -> Int32
    private let cublasLtMatmul: @convention(c) (Handle, Handle, UnsafeRawPointer, UInt64, Handle, UInt64, Handle, UnsafeRawPointer,
                                                UInt64, Handle, UInt64, Handle, UnsafeRawPointer?, UInt64, Int, Handle) -> Int32

    private var handle: Handle = nil
    /// The descriptors of one GEMM shape and one algorithm for it (its 64-byte struct).
    private struct Plan {
        var desc: Handle, a: Handle, b: Handle, d: Handle
        var algo: [UInt64]
    }
    /// A GEMM shape as cuBLASLt plans it.
    struct PlanKey: Hashable {
        var m, n, k, ldWeight, ldInput, ldOutput, batch: Int
        /// Elements between a batch's products in W, x and out.
        var strideWeight = 0, strideInput = 0, strideOutput = 0
        var outType: Int32
        var alignment: UInt64
        /// The rows of the weight's base shape whose tiling it takes (`baseShape`); 0: its own.
        var tilingRows = 0
        /// A batch whose products' operands come from device arrays of pointers (`matmulPointers`).
        var pointerArrays = false
    }
    /// One shape's candidates from the heuristic (best first, distinct configurations) and the one launched.
    private struct ShapePlans {
        var candidates: [Plan]
        var chosen = 0
    }
    private var shapes: [PlanKey: ShapePlans] = [:]
    /// While not nil, every shape launched is added (`CUDABackend.tuneGEMMs` collects a step's shapes).
    var launchedShapes: Set<PlanKey>?
    let workspaceBytes = 32 << 20

    // cudaDataType / cublasComputeType_t / attribute values (library_types.h, cublasLt.h).
    static let r32F: Int32 = 0, r16F: Int32 = 2, r16BF: Int32 = 14
    private static let compute32F: Int32 = 68
    private static let descTransA: Int32 = 3, descTransB: Int32 = 4
    private static let prefMaxWorkspace: Int32 = 1
    /// CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT (int32), CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET (int64, elements).
    private static let layoutBatchCount: Int32 = 5, layoutBatchStride: Int32 = 6
    /// CUBLASLT_MATRIX_LAYOUT_BATCH_MODE (uint32): CUBLASLT_BATCH_MODE_POINTER_ARRAY = 1.
    private static let layoutBatchMode: Int32 = 8, batchModePointerArray: UInt32 = 1
    /// CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK (uint32): 0 allows CUBLASLT_REDUCTION_SCHEME_NONE only.
    private static let prefReductionSchemeMask: Int32 = 3
    /// CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_{A,B,C,D}_BYTES.
    private static let prefMinAlignment: [Int32] = [5, 6, 7, 8]

    init() throws {
        let lib = try DynamicLibrary("libcublasLt", candidates: DynamicLibrary.candidates("libcublasLt", versions: ["13", "12"]), override: "LOOM_LIBCUBLASLT")
        library = lib
        cublasLtCreate = try lib.function("cublasLtCreate")
        cublasLtGetVersion = try lib.function("cublasLtGetVersion")
        cublasLtMatmulDescCreate = try lib.function("cublasLtMatmulDescCreate")
        cublasLtMatmulDescSetAttribute = try lib.function("cublasLtMatmulDescSetAttribute")
        cublasLtMatrixLayoutCreate = try lib.function("cublasLtMatrixLayoutCreate")
        cublasLtMatrixLayoutSetAttribute = try lib.function("cublasLtMatrixLayoutSetAttribute")
        cublasLtMatmulPreferenceCreate = try lib.function("cublasLtMatmulPreferenceCreate")
        cublasLtMatmulPreferenceSetAttribute = try lib.function("cublasLtMatmulPreferenceSetAttribute")
        cublasLtMatmulAlgoGetHeuristic = try lib.function("cublasLtMatmulAlgoGetHeuristic")
        cublasLtMatmulAlgoConfigGetAttribute = try lib.function("cublasLtMatmulAlgoConfigGetAttribute")
        cublasLtMatmul = try lib.function("cublasLtMatmul")
        try check(cublasLtCreate(&handle), "cublasLtCreate")
    }

    var version: Int { cublasLtGetVersion() }

    private func check(_ status: Int32, _ call: String) throws {
        if status != 0 { throw CUDAError.cublas(call: call, status: status, name: CUDAError.cublasStatusName(status)) }
    }

    /// `out[n, m] = x[n, k] · W[m, k]ᵀ` (row-major, bf16 operands, fp32 accumulation; `out` bf16 or
    /// f32); W's rows are `ldWeight ≥ k` elements apart, x's `ldInput ≥ k` (k when nil), out's
    /// `ldOutput ≥ m` (m when nil). In cuBLASLt's column-major terms this is `D[m, n] = op(A)ᵀ · B` with A = W (k × m) and B = x (k × n).
    /// `batch` > 1 runs that many such products in one launch, the b-th on columns `b·k ..< (b+1)·k`
    /// of x and W into `out + b·n·m` (the K-slices of one product, `linearSlices`), or, with
    /// `strides`, on `x + b·strides.input` and `W + b·strides.weight` into `out + b·strides.output`
    /// (elements; `linearStacked`).
    /// A shape launches the heuristic's first candidate (or, with `tilingRows`, the one `baseShape`
    /// says) until `choose` picks another.
    func matmul(x: UInt64, weight: UInt64, out: UInt64, n: Int, m: Int, k: Int, ldWeight: Int, ldInput: Int? = nil, ldOutput: Int? = nil,
                batch: Int = 1, strides: (weight: Int, input: Int, output: Int)? = nil, tilingRows: Int = 0, outType: Int32, workspace: UInt64,
                stream: OpaquePointer?) throws {
        precondition(batch == 1 || ldOutput == nil || strides != nil, "cuBLASLt: a batch of K-slices writes packed outputs")
        let s = batch == 1 ? (weight: 0, input: 0, output: 0) : strides ?? (weight: k, input: k, output: m * n)
        // The heuristic assumes 256-byte aligned operands unless told otherwise; views (and the
        // batch's products) may be less aligned.
        var alignment: UInt64 = 256
        let outBytes = UInt64(outType == Self.r32F ? 4 : 2)
        let strideBytes = strides == nil ? UInt64(batch > 1 ? 2 * k : 0) : UInt64(2 * s.weight) | UInt64(2 * s.input) | outBytes * UInt64(s.output)
        while alignment > 2 && (x | weight | out | strideBytes) % alignment != 0 { alignment /= 2 }
        let key = PlanKey(m: m, n: n, k: k, ldWeight: ldWeight, ldInput: ldInput ?? k, ldOutput: ldOutput ?? m, batch: batch,
                          strideWeight: s.weight, strideInput: s.input, strideOutput: s.output, outType: outType,
                          alignment: alignment, tilingRows: tilingRows)
        let planned = try plans(for: key)
        launchedShapes?.insert(key)
        let plan = planned.candidates[planned.chosen]
        try check(launch(plan, x: x, weight: weight, out: out, workspace: workspace, stream: stream), "cublasLtMatmul(m: \(m), n: \(n), k: \(k))")
    }

    /// `batch` products `out_i[n, m] = alpha · x_i[n, k] · W_i[m, k]ᵀ` in one launch, as `matmul`,
    /// with each product's W, x and out at the device addresses in `weights`, `inputs` and `outputs`
    /// (device arrays of `batch` 64-bit addresses, each 16-byte aligned). Only algorithms without a
    /// split-K reduction are taken, so a product's value does not depend on where its rows lie in
    /// its tiles: products that overlap write the same bits.
    func matmulPointers(weights: UInt64, inputs: UInt64, outputs: UInt64, batch: Int, n: Int, m: Int, k: Int, ldWeight: Int,
                        ldInput: Int, ldOutput: Int, alpha: Float, workspace: UInt64, stream: OpaquePointer?) throws {
        let key = PlanKey(m: m, n: n, k: k, ldWeight: ldWeight, ldInput: ldInput, ldOutput: ldOutput, batch: batch,
                          outType: Self.r16BF, alignment: 16, pointerArrays: true)
        let planned = try plans(for: key)
        let plan = planned.candidates[planned.chosen]
        try check(launch(plan, x: inputs, weight: weights, out: outputs, workspace: workspace, stream: stream, alpha: alpha),
                  "cublasLtMatmul(\(batch) × m: \(m), n: \(n), k: \(k), pointer arrays)")
    }

    /// A shape's candidates, made and kept at its first launch (a widened weight's base shape's too,
    /// which its first candidate comes from).
    private func plans(for key: PlanKey) throws -> ShapePlans {
        if let known = shapes[key] { return known }
        var seen = Set<AlgorithmConfig>()
        var candidates = try makePlans(key).filter { seen.insert(config(of: $0)).inserted && (!key.pointerArrays || config(of: $0).splitK == 1) }
        if candidates.isEmpty {
            throw CUDAError.cublas(call: "cublasLtMatmulAlgoGetHeuristic(m: \(key.m), n: \(key.n), k: \(key.k)): no algorithm without split-K", status: 15,
                                   name: "CUBLAS_STATUS_NOT_SUPPORTED")
        }
        if usesBaseTiling, let base = Self.baseShape(of: key) {
            let wanted = config(of: try plans(for: base).candidates[0])
            if let i = candidates.firstIndex(where: { config(of: $0) == wanted }), i > 0 { candidates.insert(candidates.remove(at: i), at: 0) }
        }
        shapes[key] = ShapePlans(candidates: candidates)
        return shapes[key]!
    }

    /// Whether a widened weight's GEMM (`tilingRows`, `ComputeBackend.linear(_:weight:bias:out:tiledAs:)`)
    /// launches the heuristic's first choice for its base rows, where that is among its own candidates
    /// (`LOOM_GEMM_BASE_TILING=0`: off). cuBLASLt's heuristic gives the gate/up weight with 8 rank-16
    /// slots' A (28,928 rows, 32 tokens) 256-row tiles, 113 of them for 132 multiprocessors, where it gives
    /// 28,672 rows 128-row tiles: on the H200 that took the adapters' cost from 17.2 to 15.5 µs a layer.
    let usesBaseTiling = ProcessInfo.processInfo.environment["LOOM_GEMM_BASE_TILING"] != "0"

    /// The shape whose first choice `key` takes: its base rows' (with the output's stride if it was
    /// the rows' count), or nil for a shape without `tilingRows` or with as many.
    static func baseShape(of key: PlanKey) -> PlanKey? {
        guard key.tilingRows > 0, key.tilingRows < key.m else { return nil }
        var base = key
        base.m = key.tilingRows
        base.tilingRows = 0
        if key.ldOutput == key.m { base.ldOutput = base.m }
        return base
    }

    /// A shape's candidates, best first by the heuristic.
    func candidates(of key: PlanKey) -> [AlgorithmConfig] {
        shapes[key]?.candidates.map(config(of:)) ?? []
    }

    /// The candidate that `key`'s launches use from now on (graphs captured before keep theirs).
    func choose(_ index: Int, for key: PlanKey) {
        precondition(shapes[key]?.candidates.indices.contains(index) == true, "no candidate \(index) for \(key)")
        shapes[key]!.chosen = index
    }

    /// A candidate as cuBLASLt numbers it: algorithm, tile, stages, split-K count and reduction scheme.
    struct AlgorithmConfig: Hashable, CustomStringConvertible {
        var id, tile, stages, splitK, reduction: Int
        var description: String { "algo \(id) tile \(tile) stages \(stages) split-k \(splitK)" + (splitK > 1 ? " reduction \(reduction)" : "") }
    }

    // cublasLtMatmulAlgoConfigAttributes_t.
    private static let configID: Int32 = 0, configTile: Int32 = 1, configSplitK: Int32 = 2, configReduction: Int32 = 3, configStages: Int32 = 6

    private func config(of plan: Plan) -> AlgorithmConfig {
        func read(_ attribute: Int32) -> Int {
            var value: UInt32 = 0
            _ = plan.algo.withUnsafeBytes { cublasLtMatmulAlgoConfigGetAttribute($0.baseAddress!, attribute, &value, 4, nil) }
            return Int(value)
        }
        return AlgorithmConfig(id: read(Self.configID), tile: read(Self.configTile), stages: read(Self.configStages),
                               splitK: max(1, read(Self.configSplitK)), reduction: read(Self.configReduction))
    }

    private func launch(_ plan: Plan, x: UInt64, weight: UInt64, out: UInt64, workspace: UInt64, stream: OpaquePointer?,
                        alpha: Float = 1) -> Int32 {
        var alpha = alpha, beta: Float = 0
        return plan.algo.withUnsafeBytes { algo in
            cublasLtMatmul(handle, plan.desc, &alpha, weight, plan.a, x, plan.b, &beta, out, plan.d, out, plan.d,
                           algo.baseAddress, workspace, workspaceBytes, stream)
        }
    }

    /// The heuristic's candidates for a shape (up to 16), best first.
    private func makePlans(_ key: PlanKey) throws -> [Plan] {
        var desc: Handle = nil, a: Handle = nil, b: Handle = nil, d: Handle = nil, pref: Handle = nil
        try check(cublasLtMatmulDescCreate(&desc, Self.compute32F, Self.r32F), "cublasLtMatmulDescCreate")
        var transA: Int32 = 1, transB: Int32 = 0
        try check(cublasLtMatmulDescSetAttribute(desc, Self.descTransA, &transA, 4), "cublasLtMatmulDescSetAttribute(TRANSA)")
        try check(cublasLtMatmulDescSetAttribute(desc, Self.descTransB, &transB, 4), "cublasLtMatmulDescSetAttribute(TRANSB)")
        try check(cublasLtMatrixLayoutCreate(&a, Self.r16BF, UInt64(key.k), UInt64(key.m), Int64(key.ldWeight)), "cublasLtMatrixLayoutCreate(A)")
        try check(cublasLtMatrixLayoutCreate(&b, Self.r16BF, UInt64(key.k), UInt64(key.n), Int64(key.ldInput)), "cublasLtMatrixLayoutCreate(B)")
        try check(cublasLtMatrixLayoutCreate(&d, key.outType, UInt64(key.m), UInt64(key.n), Int64(key.ldOutput)), "cublasLtMatrixLayoutCreate(D)")
        if key.pointerArrays {
            var count = Int32(key.batch), mode = Self.batchModePointerArray
            for layout in [a, b, d] {
                try check(cublasLtMatrixLayoutSetAttribute(layout, Self.layoutBatchCount, &count, 4), "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)")
                try check(cublasLtMatrixLayoutSetAttribute(layout, Self.layoutBatchMode, &mode, 4), "cublasLtMatrixLayoutSetAttribute(BATCH_MODE)")
            }
        } else if key.batch > 1 {
            var count = Int32(key.batch)
            for (layout, stride) in [(a, key.strideWeight), (b, key.strideInput), (d, key.strideOutput)] {
                var elements = Int64(stride)
                try check(cublasLtMatrixLayoutSetAttribute(layout, Self.layoutBatchCount, &count, 4), "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)")
                try check(cublasLtMatrixLayoutSetAttribute(layout, Self.layoutBatchStride, &elements, 8), "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)")
            }
        }
        try check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate")
        var bytes = UInt64(workspaceBytes)
        try check(cublasLtMatmulPreferenceSetAttribute(pref, Self.prefMaxWorkspace, &bytes, 8), "cublasLtMatmulPreferenceSetAttribute")
        if key.pointerArrays {
            var none: UInt32 = 0
            try check(cublasLtMatmulPreferenceSetAttribute(pref, Self.prefReductionSchemeMask, &none, 4), "cublasLtMatmulPreferenceSetAttribute(REDUCTION_SCHEME_MASK)")
        }
        var alignment = UInt32(key.alignment)
        for attribute in Self.prefMinAlignment {
            try check(cublasLtMatmulPreferenceSetAttribute(pref, attribute, &alignment, 4), "cublasLtMatmulPreferenceSetAttribute(alignment)")
        }
        // cublasLtMatmulHeuristicResult_t is 96 bytes: algo (64), workspaceSize, state, wavesCount, reserved[4].
        let requested = 16
        var results = [UInt8](repeating: 0, count: 96 * requested)
        var returned: Int32 = 0
        try check(results.withUnsafeMutableBytes {
            cublasLtMatmulAlgoGetHeuristic(handle, desc, a, b, d, d, pref, Int32(requested), $0.baseAddress!, &returned)
        }, "cublasLtMatmulAlgoGetHeuristic(m: \(key.m), n: \(key.n), k: \(key.k))")
        guard returned > 0 else {
            throw CUDAError.cublas(call: "cublasLtMatmulAlgoGetHeuristic(m: \(key.m), n: \(key.n), k: \(key.k)): no algorithm", status: 15, name: "CUBLAS_STATUS_NOT_SUPPORTED")
        }
        return (0..<Int(returned)).map { r in
            let algo = results.withUnsafeBytes { raw in (0..<8).map { raw.loadUnaligned(fromByteOffset: r * 96 + $0 * 8, as: UInt64.self) } }
            return Plan(desc: desc, a: a, b: b, d: d, algo: algo)
        }
    }
}
