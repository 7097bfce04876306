/// NVRTC, resolved from `libnvrtc.so` at run time: compiles a kernel source to a cubin for one GPU.
final class NVRTC: @unchecked Sendable {
    typealias Program = OpaquePointer?

    let library: DynamicLibrary
    private let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32
    private let nvrtcCreateProgram: @convention(c) (UnsafeMutablePointer<Program>, UnsafePointer<CChar>, UnsafePointer<CChar>, Int32,
                                                    UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    private let nvrtcCompileProgram: @convention(c) (Program, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    private let nvrtcGetProgramLogSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Int32
    private let nvrtcGetProgramLog: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Int32
    private let nvrtcGetCUBINSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Int32
    private let nvrtcGetCUBIN: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Int32
    private let nvrtcGetPTXSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Int32
    private let nvrtcGetPTX: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Int32
    private let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<Program>) -> Int32
    private let nvrtcGetErrorString: @convention(c) (Int32) -> UnsafePointer<CChar>?

    init() throws {
        let lib = try DynamicLibrary("libnvrtc", candidates: DynamicLibrary.candidates("libnvrtc", versions: ["13", "12"]), override: "LOOM_LIBNVRTC")
        library = lib
        nvrtcVersion = try lib.function("nvrtcVersion")
        nvrtcCreateProgram = try lib.function("nvrtcCreateProgram")
        nvrtcCompileProgram = try lib.function("nvrtcCompileProgram")
        nvrtcGetProgramLogSize = try lib.function("nvrtcGetProgramLogSize")
        nvrtcGetProgramLog = try lib.function("nvrtcGetProgramLog")
        nvrtcGetCUBINSize = try lib.function("nvrtcGetCUBINSize")
        nvrtcGetCUBIN = try lib.function("nvrtcGetCUBIN")
        nvrtcGetPTXSize = try lib.function("nvrtcGetPTXSize")
        nvrtcGetPTX = try lib.function("nvrtcGetPTX")
        nvrtcDestroyProgram = try lib.function("nvrtcDestroyProgram")
        nvrtcGetErrorString = try lib.function("nvrtcGetErrorString")
    }

    var version: String {
        var major: Int32 = 0, minor: Int32 = 0
        _ = nvrtcVersion(&major, &minor)
        return "\(major).\(minor)"
    }

    /// Compiles `source` (named `name` in messages) with `headers` available to `#include "…"`,
    /// and returns the cubin, or the PTX (for a `compute_XY` architecture) when `ptx` is set. The
    /// compiler log is attached to any error.
    func compile(name: String, source: String, headers: [String: String], options: [String], ptx: Bool = false) throws -> [UInt8] {
        let headerNames = Array(headers.keys).sorted()
        let cHeaderNames = headerNames.map { strdup($0) }
        let cHeaderSources = headerNames.map { strdup(headers[$0]!) }
        let cOptions = options.map { strdup($0) }
        defer { (cHeaderNames + cHeaderSources + cOptions).forEach { free($0) } }
        var program: Program = nil
        let sourcesArray: [UnsafePointer<CChar>?] = cHeaderSources.map { UnsafePointer($0) }
        let namesArray: [UnsafePointer<CChar>?] = cHeaderNames.map { UnsafePointer($0) }
        let status = sourcesArray.withUnsafeBufferPointer { s in
            namesArray.withUnsafeBufferPointer { n in
                nvrtcCreateProgram(&program, source, name, Int32(headerNames.count), s.baseAddress, n.baseAddress)
            }
        }
        try check(status, name, log: "")
        defer { _ = nvrtcDestroyProgram(&program) }
        let optionArray: [UnsafePointer<CChar>?] = cOptions.map { UnsafePointer($0) }
        let compiled = optionArray.withUnsafeBufferPointer { nvrtcCompileProgram(program, Int32(options.count), $0.baseAddress) }
        var logSize = 0
        _ = nvrtcGetProgramLogSize(program, &logSize)
        var log = [CChar](repeating: 0, count: max(1, logSize))
        _ = nvrtcGetProgramLog(program, &log)
        let logText = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        try check(compiled, name, log: logText + "\noptions: \(options.joined(separator: " "))")
        var size = 0
        try check(ptx ? nvrtcGetPTXSize(program, &size) : nvrtcGetCUBINSize(program, &size), name, log: logText)
        var output = [CChar](repeating: 0, count: size)
        try check(ptx ? nvrtcGetPTX(program, &output) : nvrtcGetCUBIN(program, &output), name, log: logText)
        return output.map { UInt8(bitPattern: $0) }
    }

    private func check(_ status: Int32, _ name: String, log: String) throws {
        if status == 0 { return }
        let message = nvrtcGetErrorString(status).map { String(cString: $0) } ?? "NVRTC_ERROR_\(status)"
        throw CUDAError.compilation(kernel: name, status: status, message: message, log: log)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
