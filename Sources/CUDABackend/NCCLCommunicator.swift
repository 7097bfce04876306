#if canImport(Glibc)
import Glibc
#endif
import Foundation
import LoomCore

/// NCCL, resolved from `libnccl.so.2` at run time: the system library path, the CUDA toolkit's
/// folders, then the `nvidia-nccl` wheel of a Python install; `LOOM_LIBNCCL` may name a path first.
final class NCCL: @unchecked Sendable {
    typealias Comm = OpaquePointer?

    let library: DynamicLibrary
    let ncclGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let ncclCommInitAll: @convention(c) (UnsafeMutablePointer<Comm>, Int32, UnsafePointer<Int32>) -> Int32
    let ncclCommDestroy: @convention(c) (Comm) -> Int32
    let ncclAllReduce: @convention(c) (UInt64, UInt64, Int, Int32, Int32, Comm, OpaquePointer?) -> Int32
    let ncclAllGather: @convention(c) (UInt64, UInt64, Int, Int32, Comm, OpaquePointer?) -> Int32
    let ncclGetErrorString: @convention(c) (Int32) -> UnsafePointer<CChar>?

    /// ncclDataType_t and ncclRedOp_t values (nccl.h).
    static let float32: Int32 = 7, float16: Int32 = 6, bfloat16: Int32 = 9, int32: Int32 = 2
    static let sum: Int32 = 0

    init() throws {
        var candidates = ["libnccl.so.2", "libnccl.so"] + DynamicLibrary.candidates("libnccl", versions: ["2"])
        candidates += Self.pythonWheelPaths()
        library = try DynamicLibrary("libnccl (NCCL, needed for --tp-size > 1 on GPUs)", candidates: candidates, override: "LOOM_LIBNCCL")
        ncclGetVersion = try library.function("ncclGetVersion")
        ncclCommInitAll = try library.function("ncclCommInitAll")
        ncclCommDestroy = try library.function("ncclCommDestroy")
        ncclAllReduce = try library.function("ncclAllReduce")
        ncclAllGather = try library.function("ncclAllGather")
        ncclGetErrorString = try library.function("ncclGetErrorString")
    }

    /// `…/site-packages/nvidia/nccl/lib/libnccl.so.2` (and `dist-packages`) of the Python installs found.
    static func pythonWheelPaths() -> [String] {
        var paths: [String] = []
        let fm = FileManager.default
        for root in ["/usr/local/lib", "/usr/lib", "/opt/conda/lib", "/usr/local/lib64"] {
            for entry in ((try? fm.contentsOfDirectory(atPath: root)) ?? []).sorted().reversed() where entry.hasPrefix("python3") {
                for packages in ["dist-packages", "site-packages"] {
                    for sub in ["nvidia/nccl/lib", "nvidia/cu13/lib", "nvidia/cu12/lib"] {
                        let p = "\(root)/\(entry)/\(packages)/\(sub)/libnccl.so.2"
                        if fm.fileExists(atPath: p) { paths.append(p) }
                    }
                }
            }
        }
        return paths
    }

    var version: String {
        var v: Int32 = 0
        guard ncclGetVersion(&v) == 0 else { return "?" }
        // NCCL ≥ 2.9: major·10000 + minor·100 + patch.
        return v >= 10000 ? "\(v / 10000).\((v % 10000) / 100).\(v % 100)" : "\(v / 1000).\((v % 1000) / 100).\(v % 100)"
    }

    func check(_ status: Int32, _ call: @autoclosure () -> String) throws {
        if status != 0 { throw error(status, call()) }
    }

    func error(_ status: Int32, _ call: String) -> CUDAError {
        let message = ncclGetErrorString(status).map { String(cString: $0) } ?? "unknown error"
        return .driver(call: call, status: status, name: "ncclResult \(status)", message: message)
    }
}

/// One rank of a tensor-parallel group on GPUs: NCCL collectives enqueued on the rank's
/// `CUDABackend` stream, so they order with its kernels (and are captured into its CUDA graphs).
/// Single process, one thread per GPU: `group(backends:)` makes every rank's communicator with
/// `ncclCommInitAll`; rank `r`'s collectives must then be called from rank `r`'s thread, all ranks
/// calling the same collectives in the same order.
public final class NCCLCommunicator: Communicator {
    public let rank: Int
    public let size: Int
    let backend: CUDABackend
    private let nccl: NCCL
    private let comm: NCCL.Comm
    /// All-gather landing buffers `[size, n, cols]`; grown by allocating a new one, older ones kept
    /// alive because captured graphs may point at them.
    private var scratch: [CUDAStorage] = []

    /// The NCCL version loaded, for reports.
    public let ncclVersion: String

    private init(rank: Int, size: Int, backend: CUDABackend, nccl: NCCL, comm: NCCL.Comm) {
        self.rank = rank
        self.size = size
        self.backend = backend
        self.nccl = nccl
        self.comm = comm
        ncclVersion = nccl.version
    }

    deinit {
        // Graphs that captured this communicator's collectives keep it alive inside NCCL, and
        // ncclCommDestroy waits for them (a process that ended with live graphs hung here).
        backend.releaseGraphs()
        _ = nccl.ncclCommDestroy(comm)
    }

    /// One communicator per backend, rank `r` on `backends[r]`'s device. The devices must differ.
    /// NVLink SHARP (multicast) is switched off first (`NCCL_NVLS_ENABLE=0`): on shared hosts a
    /// program that uses it can put the GPUs out of service.
    public static func group(backends: [CUDABackend]) throws -> [NCCLCommunicator] {
        precondition(!backends.isEmpty)
        let ordinals = backends.map { Int32($0.ordinal) }
        guard Set(ordinals).count == ordinals.count else {
            throw LoomError.invalidArgument("NCCL ranks need distinct GPUs, got devices \(ordinals)")
        }
        setenv("NCCL_NVLS_ENABLE", "0", 1)
        let nccl = try NCCL()
        var comms = [NCCL.Comm](repeating: nil, count: backends.count)
        try ordinals.withUnsafeBufferPointer { devices in
            try nccl.check(nccl.ncclCommInitAll(&comms, Int32(backends.count), devices.baseAddress!),
                           "ncclCommInitAll(devices \(ordinals))")
        }
        return backends.indices.map { r in
            NCCLCommunicator(rank: r, size: backends.count, backend: backends[r], nccl: nccl, comm: comms[r])
        }
    }

    private static func dataType(_ d: DType) -> Int32 {
        switch d {
        case .f32: NCCL.float32
        case .bf16: NCCL.bfloat16
        case .f16: NCCL.float16
        case .i32: NCCL.int32
        }
    }

    private func must(_ status: Int32, _ call: @autoclosure () -> String) {
        if status != 0 { backend.fail(nccl.error(status, call())) }
    }

    public func allReduceSum(_ tensor: DeviceTensor) {
        if size == 1 || tensor.count == 0 { return }
        // Skipped while a captured graph replays; starts the capture when one is armed.
        guard backend.beginLaunch() else { return }
        backend.activate()
        let p = tensor.devicePointer
        must(nccl.ncclAllReduce(p, p, tensor.count, Self.dataType(tensor.dtype), NCCL.sum, comm, backend.stream),
             "ncclAllReduce(\(tensor.count) × \(tensor.dtype), rank \(rank))")
    }

    /// NCCL gathers along the first dimension: each rank's `[n, cols]` lands in a scratch
    /// `[size, n, cols]`, then one strided copy per rank moves block `r` into columns
    /// `r·cols ..< min((r+1)·cols, width)` of `out` (the last rank's padding dropped).
    public func allGather(_ x: DeviceTensor, out: DeviceTensor) {
        let rows = x.shape[0], cols = x.shape.rowCount, width = out.shape.rowCount
        precondition(x.dtype == out.dtype, "allGather: \(x.dtype) into \(out.dtype)")
        precondition(out.shape[0] == rows, "allGather: \(x.shape) into \(out.shape)")
        if rows == 0 { return }
        guard backend.beginLaunch() else { return }
        backend.activate()
        let es = x.dtype.byteCount
        let block = rows * cols * es
        let landing: UInt64
        if size == 1 {
            landing = x.devicePointer
        } else {
            if scratch.last.map({ $0.byteCount < block * size }) ?? true {
                precondition(!backend.isCapturing, "allGather: the first gather of \(rows) rows must run outside a graph capture")
                do { scratch.append(try CUDAStorage(driver: backend.driver, byteCount: block * size)) } catch { backend.fail(error) }
            }
            landing = scratch.last!.pointer
            must(nccl.ncclAllGather(x.devicePointer, landing, rows * cols, Self.dataType(x.dtype), comm, backend.stream),
                 "ncclAllGather(\(rows)×\(cols) × \(x.dtype), rank \(rank))")
        }
        for r in 0..<size {
            let first = r * cols, n = max(0, min(cols, width - first))
            if n == 0 { continue }
            backend.copy2D(from: landing + UInt64(r * block), sourcePitch: cols * es,
                           to: out.devicePointer + UInt64(first * es), destinationPitch: width * es,
                           widthBytes: n * es, height: rows)
        }
    }
}

extension CUDABackend {
    /// A strided device-to-device copy on the stream (`cuMemcpy2DAsync`).
    func copy2D(from source: UInt64, sourcePitch: Int, to destination: UInt64, destinationPitch: Int, widthBytes: Int, height: Int) {
        if widthBytes == 0 || height == 0 { return }
        if sourcePitch == widthBytes && destinationPitch == widthBytes {
            must(driver.cuMemcpyDtoDAsync(destination, source, widthBytes * height, stream), "cuMemcpyDtoDAsync")
            return
        }
        let status = driver.memcpy2DAsync(from: .device(source), sourcePitch: sourcePitch, toDevice: destination,
                                          destinationPitch: destinationPitch, widthBytes: widthBytes, height: height, stream: stream)
        must(status, "cuMemcpy2DAsync(\(widthBytes) B × \(height), pitches \(sourcePitch)/\(destinationPitch))")
    }

    var isCapturing: Bool { graphState == .capturing }
}
