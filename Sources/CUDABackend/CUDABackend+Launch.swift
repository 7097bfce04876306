import LoomCore

/// A kernel argument, widened to an 8-byte slot (the driver reads each parameter's own size).
enum KernelArgument {
    case pointer(UInt64)
    case int(Int)
    case float(Float)
    case u64(UInt64)

    var bits: UInt64 {
        switch self {
        case .pointer(let p): p
        case .int(let v): UInt64(UInt32(bitPattern: Int32(truncatingIfNeeded: v)))
        case .float(let f): UInt64(f.bitPattern)
        case .u64(let v): v
        }
    }
}

extension CUDABackend {
    /// Launches `function` on the stream, or records it when a graph capture is armed, or skips it
    /// while a captured graph stands in for the step.
    /// `label` names the launch in kernel profiles (default: the function); built only when profiling.
    func launch(_ function: String, grid: (Int, Int, Int), block: Int, sharedBytes: Int = 0, label: @autoclosure () -> String? = nil,
                _ arguments: [KernelArgument]) {
        launch(function, grid: grid, block: (block, 1, 1), sharedBytes: sharedBytes, label: label(), arguments)
    }

    /// `launch` with a two-dimensional block (`block.2` must be 1).
    func launch(_ function: String, grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int = 0, label: @autoclosure () -> String? = nil,
                _ arguments: [KernelArgument]) {
        precondition(block.2 == 1 && block.0 * block.1 <= 1024, "\(function): block \(block)")
        guard beginLaunch() else { return }
        activate()
        guard let f = kernels.functions[function] else { fail(CUDAError.missingKernel(module: "?", function: function)) }
        precondition(grid.0 > 0 && grid.1 > 0 && grid.2 > 0, "\(function): empty grid \(grid)")
        let probe = profiler?.begin(label() ?? function, stream: stream)
        defer { if let probe { profiler!.end(probe, stream: stream) } }
        var slots = arguments.map(\.bits)
        slots.withUnsafeMutableBufferPointer { buffer in
            var pointers: [UnsafeMutableRawPointer?] = (0..<buffer.count).map { UnsafeMutableRawPointer(buffer.baseAddress! + $0) }
            let status = pointers.withUnsafeMutableBufferPointer {
                usesProgrammaticLaunch
                    ? driver.launchProgrammatic(f, grid: (UInt32(grid.0), UInt32(grid.1), UInt32(grid.2)), block: UInt32(block.0),
                                                blockY: UInt32(block.1), sharedBytes: UInt32(sharedBytes), stream: stream, parameters: $0.baseAddress)
                    : driver.cuLaunchKernel(f, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2), UInt32(block.0), UInt32(block.1), 1,
                                            UInt32(sharedBytes), stream, $0.baseAddress, nil)
            }
            must(status, "\(usesProgrammaticLaunch ? "cuLaunchKernelEx" : "cuLaunchKernel")(\(function), grid \(grid), block \(block))")
        }
    }

    /// `out = x · Wᵀ` (bf16 operands, fp32 accumulation): `loom_gemv` for a few rows of x, cuBLASLt
    /// otherwise.
    func gemm(_ x: DeviceTensor, _ weight: DeviceTensor, _ out: DeviceTensor, tilingRows: Int = 0) {
        let n = x.shape[0], k = x.shape.rowCount, m = weight.shape[0]
        precondition(x.dtype == .bf16 && weight.dtype == .bf16, "linear: bf16 operands expected, got \(x.dtype) · \(weight.dtype)")
        let ldWeight = weight.shape.rowCount
        precondition(ldWeight >= k && (ldWeight == k || ldWeight % 8 == 0), "linear: x \(x.shape) · weightᵀ \(weight.shape)")
        precondition(out.shape[0] == n && out.shape.rowCount == m, "linear: out \(out.shape) for \(n)×\(m)")
        precondition(out.dtype == .bf16 || out.dtype == .f32, "linear: out must be bf16 or f32")
        if n <= maxGEMVRows {
            gemv(x, weight, out)
            return
        }
        blasMatmul(x, weight, out, n: n, m: m, k: k, tilingRows: tilingRows, label: "cublasLt \(n)x\(m)x\(k)")
    }

    /// One cuBLASLt launch (`CuBLASLt.matmul`), with the algorithm `tuneGEMMs` chose for the shape, if
    /// any, else the first candidate (`tilingRows`: the base shape's tiling, `CuBLASLt.baseShape`).
    /// With `outColumn`, the product goes into `out`'s columns `outColumn ..< outColumn + m` (rows
    /// `out.shape.rowCount` apart) rather than filling `out`. With `strides`, the batch's products
    /// (`CuBLASLt.matmul`) write rows `out.shape.rowCount` apart.
    func blasMatmul(_ x: DeviceTensor, _ weight: DeviceTensor, _ out: DeviceTensor, n: Int, m: Int, k: Int, ldInput: Int? = nil,
                    batch: Int = 1, strides: (weight: Int, input: Int, output: Int)? = nil, outColumn: Int? = nil, tilingRows: Int = 0,
                    label: String) {
        precondition(outColumn.map { $0 >= 0 && $0 + m <= out.shape.rowCount && batch == 1 } ?? true, "\(label): columns past \(out.shape)")
        guard beginLaunch() else { return }
        activate()
        let probe = profiler?.begin(label, stream: stream)
        defer { if let probe { profiler!.end(probe, stream: stream) } }
        do {
            try blas.matmul(x: x.devicePointer, weight: weight.devicePointer,
                            out: out.devicePointer + UInt64((outColumn ?? 0) * out.dtype.byteCount), n: n, m: m, k: k,
                            ldWeight: weight.shape.rowCount, ldInput: ldInput,
                            ldOutput: outColumn != nil || strides != nil ? out.shape.rowCount : nil, batch: batch, strides: strides,
                            tilingRows: tilingRows, outType: out.dtype == .f32 ? CuBLASLt.r32F : CuBLASLt.r16BF,
                            workspace: blasWorkspace.pointer, stream: stream)
        } catch {
            fail(error)
        }
    }

    /// `loom_gemv` (n ≤ 4): 4 rows of W a block.
    private func gemv(_ x: DeviceTensor, _ weight: DeviceTensor, _ out: DeviceTensor) {
        let n = x.shape[0], k = x.shape.rowCount, m = weight.shape[0]
        launch("loom_gemv_n\(n)", grid: ((m + 3) / 4, 1, 1), block: 128, label: "gemv \(n)x\(m)x\(k)",
               [.pointer(x.devicePointer), .pointer(weight.devicePointer), .pointer(out.devicePointer), .int(out.dtype == .f32 ? 1 : 0),
                .int(m), .int(k), .int(weight.shape.rowCount)])
    }

    /// Zeroes a tensor on the stream (a memset node in a captured graph).
    public func zero(_ t: DeviceTensor) {
        guard t.count > 0, beginLaunch() else { return }
        activate()
        must(driver.cuMemsetD8Async(t.devicePointer, 0, t.count * t.dtype.byteCount, stream), "cuMemsetD8Async(\(t.shape))")
    }

    /// Whether a launch should go to the stream now; starts a capture when one is armed.
    func beginLaunch() -> Bool {
        switch graphState {
        case .eager, .capturing:
            return true
        case .replaying:
            return false
        case .armed:
            activate()
            must(driver.cuStreamBeginCapture(mainStream, CUAttribute.captureModeRelaxed), "cuStreamBeginCapture")
            graphState = .capturing
            return true
        }
    }

    /// Runs `body` (one model step: host copies first, then kernels) with its kernels captured into a
    /// CUDA graph the first time `key` is seen and replayed from it afterwards. Every launch of the
    /// step must have the same arguments for the same key: persistent buffers, the same shapes.
    public func withGraph<R>(key: String, _ body: () throws -> R) rethrows -> R {
        precondition(graphState == .eager, "graph steps do not nest")
        activate()
        if let exec = graphs[key] {
            graphState = .replaying
            defer { graphState = .eager }
            let result = try body()
            must(driver.cuGraphLaunch(exec, mainStream), "cuGraphLaunch(\(key))")
            return result
        }
        graphState = .armed
        let result: R
        do {
            result = try body()
        } catch {
            if graphState == .capturing {
                var graph: OpaquePointer?
                _ = driver.cuStreamEndCapture(mainStream, &graph)
                if let graph { _ = driver.cuGraphDestroy(graph) }
            }
            graphState = .eager
            onSideStream = false
            sideForked = false
            throw error
        }
        if graphState == .capturing {
            joinSideStream()  // a capture ends with every stream it forked joined
            var graph: OpaquePointer?
            must(driver.cuStreamEndCapture(mainStream, &graph), "cuStreamEndCapture(\(key))")
            if recordsGraphSummaries, let edges = GraphEdges(graph: graph, driver: driver) { graphSummaries[key] = edges.summary(driver: driver) }
            var exec: OpaquePointer?
            must(driver.cuGraphInstantiateWithFlags(&exec, graph, 0), "cuGraphInstantiateWithFlags(\(key))")
            _ = driver.cuGraphDestroy(graph)
            graphs[key] = exec!
            graphState = .eager
            must(driver.cuGraphLaunch(exec, mainStream), "cuGraphLaunch(\(key))")
        }
        graphState = .eager
        return result
    }

    /// Destroys every captured graph (after the stream drains); the next `withGraph` of a key captures
    /// again. NCCL holds its communicator for as long as a graph with its collectives lives, so a
    /// communicator is destroyed only after the graphs that captured it.
    public func releaseGraphs() {
        precondition(graphState == .eager, "releaseGraphs inside a graph step")
        if graphs.isEmpty { return }
        synchronize()
        for (_, exec) in graphs { _ = driver.cuGraphExecDestroy(exec) }
        graphs.removeAll()
    }

    /// Destroys the graph of `key`, if captured (after the stream drains).
    public func releaseGraph(_ key: String) {
        precondition(graphState == .eager, "releaseGraph inside a graph step")
        guard let exec = graphs.removeValue(forKey: key) else { return }
        synchronize()
        _ = driver.cuGraphExecDestroy(exec)
    }

    /// Whether the current launches go into a graph (their arguments must not depend on per-step values).
    var isRecordingGraph: Bool { graphState != .eager }

    public var isReplayingGraph: Bool { graphState == .replaying }

    /// Milliseconds of device time that `body`'s work takes, from events around it on the stream.
    public func timeMilliseconds(_ body: () -> Void) -> Double {
        activate()
        var start: OpaquePointer?, end: OpaquePointer?
        must(driver.cuEventCreate(&start, CUAttribute.eventDefault), "cuEventCreate")
        must(driver.cuEventCreate(&end, CUAttribute.eventDefault), "cuEventCreate")
        must(driver.cuEventRecord(start, stream), "cuEventRecord")
        body()
        must(driver.cuEventRecord(end, stream), "cuEventRecord")
        must(driver.cuEventSynchronize(end), "cuEventSynchronize")
        var ms: Float = 0
        must(driver.cuEventElapsedTime(&ms, start, end), "cuEventElapsedTime")
        return Double(ms)
    }

    /// Device-to-device copy rate in bytes per second, counting bytes read plus bytes written: the
    /// HBM ceiling that benchmark floors are computed from.
    public func measureCopyBandwidth(bytes: Int = 2 << 30, repeats: Int = 20) throws -> Double {
        activate()
        let a = try CUDAStorage(driver: driver, byteCount: bytes), b = try CUDAStorage(driver: driver, byteCount: bytes)
        try driver.check(driver.cuMemsetD8Async(a.pointer, 1, bytes, stream), "cuMemsetD8Async")
        for _ in 0..<3 { must(driver.cuMemcpyDtoDAsync(b.pointer, a.pointer, bytes, stream), "cuMemcpyDtoDAsync") }
        let ms = timeMilliseconds {
            for i in 0..<repeats {
                let (src, dst) = i % 2 == 0 ? (a, b) : (b, a)
                must(driver.cuMemcpyDtoDAsync(dst.pointer, src.pointer, bytes, stream), "cuMemcpyDtoDAsync")
            }
        }
        return 2 * Double(bytes) * Double(repeats) / (ms / 1000)
    }

    /// Fills a bf16 tensor with uniform values of the given standard deviation.
    public func fillRandom(_ t: DeviceTensor, seed: UInt64, standardDeviation: Float) {
        precondition(t.dtype == .bf16)
        let count = t.count
        launch("loom_fill_random", grid: (min(max(1, (count + 255) / 256), 65536), 1, 1), block: 256,
               [.pointer(t.devicePointer), .u64(UInt64(count)), .u64(seed), .float(standardDeviation * 1.7320508)])
    }

    public func fill(_ t: DeviceTensor, value: Float) {
        precondition(t.dtype == .bf16)
        let count = t.count
        launch("loom_fill_value", grid: (min(max(1, (count + 255) / 256), 65536), 1, 1), block: 256,
               [.pointer(t.devicePointer), .u64(UInt64(count)), .float(value)])
    }
}

/// Device time per kernel name, from events around each launch (eager steps only): what a step
/// spends where, without a profiler on the machine.
public final class KernelProfiler {
    let driver: Driver
    private var pending: [(String, OpaquePointer?, OpaquePointer?)] = []
    private var free: [OpaquePointer?] = []

    init(driver: Driver) { self.driver = driver }

    struct Probe { var name: String; var start: OpaquePointer? }

    private func event() -> OpaquePointer? {
        if let e = free.popLast() { return e }
        var e: OpaquePointer?
        _ = driver.cuEventCreate(&e, CUAttribute.eventDefault)
        return e
    }

    func begin(_ name: String, stream: OpaquePointer?) -> Probe {
        let e = event()
        _ = driver.cuEventRecord(e, stream)
        return Probe(name: name, start: e)
    }

    func end(_ probe: Probe, stream: OpaquePointer?) {
        let e = event()
        _ = driver.cuEventRecord(e, stream)
        pending.append((probe.name, probe.start, e))
    }

    /// Per kernel name: launches and total milliseconds since the last report; resets.
    public func report() -> [String: (count: Int, milliseconds: Double)] {
        var totals: [String: (count: Int, milliseconds: Double)] = [:]
        for (name, start, end) in pending {
            _ = driver.cuEventSynchronize(end)
            var ms: Float = 0
            _ = driver.cuEventElapsedTime(&ms, start, end)
            let t = totals[name] ?? (0, 0)
            totals[name] = (t.count + 1, t.milliseconds + Double(ms))
            free.append(start)
            free.append(end)
        }
        pending.removeAll()
        return totals
    }
}

extension CUDABackend {
    /// Starts timing every launch (nil stops); read with `profiler?.report()`.
    public func setProfiling(_ on: Bool) {
        profiler = on ? (profiler ?? KernelProfiler(driver: driver)) : nil
    }

    /// Every launch of `body`, timed: per kernel name, launches and total milliseconds. Profiling is off afterwards.
    public func profileLaunches(_ body: () throws -> Void) rethrows -> [String: (count: Int, milliseconds: Double)] {
        setProfiling(true)
        defer { setProfiling(false) }
        try body()
        return profiler!.report()
    }
}
