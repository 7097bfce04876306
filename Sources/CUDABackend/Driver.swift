/// The CUDA driver API, resolved from `libcuda.so.1` at run time (`_v2` symbols where the header
/// maps a call to one).
final class Driver: @unchecked Sendable {
    typealias Handle = OpaquePointer?
    typealias DevicePointer = UInt64

    let library: DynamicLibrary
    let cuInit: @convention(c) (UInt32) -> Int32
    let cuDriverGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
    let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Int32
    let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Int32
    let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<Handle>, Int32) -> Int32
    let cuCtxSetCurrent: @convention(c) (Handle) -> Int32
    let cuCtxSynchronize: @convention(c) () -> Int32
    let cuMemAlloc: @convention(c) (UnsafeMutablePointer<DevicePointer>, Int) -> Int32
    let cuMemFree: @convention(c) (DevicePointer) -> Int32
    let cuMemGetInfo: @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> Int32
    let cuMemsetD8Async: @convention(c) (DevicePointer, UInt8, Int, Handle) -> Int32
    let cuMemcpyHtoDAsync: @convention(c) (DevicePointer, UnsafeRawPointer, Int, Handle) -> Int32
    let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer, DevicePointer, Int, Handle) -> Int32
    let cuMemcpyDtoDAsync: @convention(c) (DevicePointer, DevicePointer, Int, Handle) -> Int32
    let cuMemcpy2DAsync: @convention(c) (UnsafeRawPointer, Handle) -> Int32
    let cuStreamCreate: @convention(c) (UnsafeMutablePointer<Handle>, UInt32) -> Int32
    let cuStreamSynchronize: @convention(c) (Handle) -> Int32
    let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<Handle>, UnsafeRawPointer) -> Int32
    let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<Handle>, Handle, UnsafePointer<CChar>) -> Int32
    let cuFuncSetAttribute: @convention(c) (Handle, Int32, Int32) -> Int32
    /// A kernel's attributes (registers, local memory) for reports; nil where missing.
    let cuFuncGetAttribute: (@convention(c) (UnsafeMutablePointer<Int32>, Int32, Handle) -> Int32)?
    let cuLaunchKernel: @convention(c) (Handle, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, Handle,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32
    /// `cuLaunchKernelEx` (CUDA 12+), for launch attributes; nil on older drivers.
    let cuLaunchKernelEx: (@convention(c) (UnsafeRawPointer, Handle, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                           UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32)?
    let cuEventCreate: @convention(c) (UnsafeMutablePointer<Handle>, UInt32) -> Int32
    let cuEventDestroy: @convention(c) (Handle) -> Int32
    let cuStreamWaitEvent: @convention(c) (Handle, Handle, UInt32) -> Int32
    let cuMemHostAlloc: @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int, UInt32) -> Int32
    let cuMemFreeHost: @convention(c) (UnsafeMutableRawPointer) -> Int32
    let cuEventRecord: @convention(c) (Handle, Handle) -> Int32
    let cuEventSynchronize: @convention(c) (Handle) -> Int32
    let cuEventElapsedTime: @convention(c) (UnsafeMutablePointer<Float>, Handle, Handle) -> Int32
    let cuStreamBeginCapture: @convention(c) (Handle, Int32) -> Int32
    let cuStreamEndCapture: @convention(c) (Handle, UnsafeMutablePointer<Handle>) -> Int32
    let cuGraphInstantiateWithFlags: @convention(c) (UnsafeMutablePointer<Handle>, Handle, UInt64) -> Int32
    let cuGraphLaunch: @convention(c) (Handle, Handle) -> Int32
    let cuGraphDestroy: @convention(c) (Handle) -> Int32
    let cuGraphExecDestroy: @convention(c) (Handle) -> Int32
    let cuGetErrorName: @convention(c) (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Int32
    /// Graph inspection (CUDA 12.3+; nil on older drivers): `GraphEdges` reads a captured graph's
    /// edges and kernels.
    let cuGraphGetEdges: (@convention(c) (Handle, UnsafeMutablePointer<Handle>?, UnsafeMutablePointer<Handle>?,
                                          UnsafeMutablePointer<UInt64>?, UnsafeMutablePointer<Int>) -> Int32)?
    let cuGraphNodeGetType: (@convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32)?
    let cuGraphKernelNodeGetParams: (@convention(c) (Handle, UnsafeMutableRawPointer) -> Int32)?
    let cuFuncGetName: (@convention(c) (UnsafeMutablePointer<UnsafePointer<CChar>?>, Handle) -> Int32)?
    let cuKernelGetName: (@convention(c) (UnsafeMutablePointer<UnsafePointer<CChar>?>, Handle) -> Int32)?
    let cuGetErrorString: @convention(c) (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Int32

    init() throws {
        let lib = try DynamicLibrary("libcuda", candidates: ["libcuda.so.1", "libcuda.so", "/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"], override: "LOOM_LIBCUDA")
        library = lib
        cuInit = try lib.function("cuInit")
        cuDriverGetVersion = try lib.function("cuDriverGetVersion")
        cuDeviceGetCount = try lib.function("cuDeviceGetCount")
        cuDeviceGet = try lib.function("cuDeviceGet")
        cuDeviceGetName = try lib.function("cuDeviceGetName")
        cuDeviceGetAttribute = try lib.function("cuDeviceGetAttribute")
        cuDevicePrimaryCtxRetain = try lib.function("cuDevicePrimaryCtxRetain")
        cuCtxSetCurrent = try lib.function("cuCtxSetCurrent")
        cuCtxSynchronize = try lib.function("cuCtxSynchronize")
        cuMemAlloc = try lib.function("cuMemAlloc_v2")
        cuMemFree = try lib.function("cuMemFree_v2")
        cuMemGetInfo = try lib.function("cuMemGetInfo_v2")
        cuMemsetD8Async = try lib.function("cuMemsetD8Async")
        cuMemcpyHtoDAsync = try lib.function("cuMemcpyHtoDAsync_v2")
        cuMemcpyDtoHAsync = try lib.function("cuMemcpyDtoHAsync_v2")
        cuMemcpyDtoDAsync = try lib.function("cuMemcpyDtoDAsync_v2")
        cuMemcpy2DAsync = try lib.function(anyOf: ["cuMemcpy2DAsync_v2", "cuMemcpy2DAsync"])
        cuStreamCreate = try lib.function("cuStreamCreate")
        cuStreamSynchronize = try lib.function("cuStreamSynchronize")
        cuModuleLoadData = try lib.function("cuModuleLoadData")
        cuModuleGetFunction = try lib.function("cuModuleGetFunction")
        cuFuncSetAttribute = try lib.function("cuFuncSetAttribute")
        cuLaunchKernel = try lib.function("cuLaunchKernel")
        cuLaunchKernelEx = try? lib.function("cuLaunchKernelEx")
        cuEventCreate = try lib.function("cuEventCreate")
        cuEventDestroy = try lib.function(anyOf: ["cuEventDestroy_v2", "cuEventDestroy"])
        cuStreamWaitEvent = try lib.function("cuStreamWaitEvent")
        cuMemHostAlloc = try lib.function("cuMemHostAlloc")
        cuMemFreeHost = try lib.function("cuMemFreeHost")
        cuEventRecord = try lib.function("cuEventRecord")
        cuEventSynchronize = try lib.function("cuEventSynchronize")
        cuEventElapsedTime = try lib.function(anyOf: ["cuEventElapsedTime_v2", "cuEventElapsedTime"])
        cuStreamBeginCapture = try lib.function(anyOf: ["cuStreamBeginCapture_v2", "cuStreamBeginCapture"])
        cuStreamEndCapture = try lib.function("cuStreamEndCapture")
        cuGraphInstantiateWithFlags = try lib.function("cuGraphInstantiateWithFlags")
        cuGraphLaunch = try lib.function("cuGraphLaunch")
        cuGraphDestroy = try lib.function("cuGraphDestroy")
        cuGraphExecDestroy = try lib.function("cuGraphExecDestroy")
        cuGetErrorName = try lib.function("cuGetErrorName")
        cuGraphGetEdges = try? lib.function("cuGraphGetEdges_v2")
        cuGraphNodeGetType = try? lib.function("cuGraphNodeGetType")
        cuGraphKernelNodeGetParams = try? lib.function("cuGraphKernelNodeGetParams_v2")
        cuFuncGetName = try? lib.function("cuFuncGetName")
        cuFuncGetAttribute = try? lib.function("cuFuncGetAttribute")
        cuKernelGetName = try? lib.function("cuKernelGetName")
        cuGetErrorString = try lib.function("cuGetErrorString")
    }

    /// Throws `CUDAError.driver` naming `call` unless `status` is `CUDA_SUCCESS`.
    @inline(__always)
    func check(_ status: Int32, _ call: @autoclosure () -> String) throws {
        if status != 0 { throw error(status, call()) }
    }

    func error(_ status: Int32, _ call: String) -> CUDAError {
        var namePointer: UnsafePointer<CChar>?
        var messagePointer: UnsafePointer<CChar>?
        _ = cuGetErrorName(status, &namePointer)
        _ = cuGetErrorString(status, &messagePointer)
        return .driver(call: call, status: status,
                       name: namePointer.map { String(cString: $0) } ?? "CUDA_ERROR_\(status)",
                       message: messagePointer.map { String(cString: $0) } ?? "unknown error")
    }
}

extension Driver {
    /// Where a 2-D copy reads from.
    enum CopySource {
        case host(UnsafeRawPointer)
        case device(UInt64)
    }

    /// `cuMemcpy2DAsync` into device memory: `height` rows of `widthBytes`, pitches in bytes.
    func memcpy2DAsync(from source: CopySource, sourcePitch: Int, toDevice destination: UInt64, destinationPitch: Int,
                       widthBytes: Int, height: Int, stream: Handle) -> Int32 {
        // CUDA_MEMCPY2D: 16 eight-byte fields; memory types (1 host, 2 device) are 4-byte enums padded to 8.
        var p = [UInt64](repeating: 0, count: 16)
        switch source {
        case .host(let pointer): p[2] = 1; p[3] = UInt64(UInt(bitPattern: pointer))
        case .device(let pointer): p[2] = 2; p[4] = pointer
        }
        p[6] = UInt64(sourcePitch)
        p[9] = 2; p[11] = destination; p[13] = UInt64(destinationPitch)
        p[14] = UInt64(widthBytes); p[15] = UInt64(height)
        return p.withUnsafeBytes { cuMemcpy2DAsync($0.baseAddress!, stream) }
    }
}

extension Driver {
    /// `cuLaunchKernelEx` with programmatic stream serialization allowed (programmatic dependent
    /// launch): the kernel may start before the previous kernel in the stream has finished, and
    /// waits for it with `griddepcontrol.wait` (every Loom kernel does, `grid_wait` in common.cuh).
    func launchProgrammatic(_ function: Handle, grid: (UInt32, UInt32, UInt32), block: UInt32, blockY: UInt32 = 1, sharedBytes: UInt32,
                            stream: Handle, parameters: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
        // CUlaunchAttribute: a 4-byte id padded to 8, then a 64-byte value union (the flag is its first int).
        var attribute = [UInt64](repeating: 0, count: 9)
        attribute[0] = UInt64(CUAttribute.launchProgrammaticStreamSerialization)
        attribute[1] = 1
        return attribute.withUnsafeMutableBytes { attributeBytes in
            // CUlaunchConfig (56 bytes): grid x/y/z, block x/y/z and shared bytes as uints, padding
            // to 32, the stream, the attribute array, the attribute count.
            var config = [UInt8](repeating: 0, count: 56)
            return config.withUnsafeMutableBytes { c in
                for (i, v) in [grid.0, grid.1, grid.2, block, blockY, 1, sharedBytes].enumerated() {
                    c.storeBytes(of: v, toByteOffset: 4 * i, as: UInt32.self)
                }
                c.storeBytes(of: UInt(bitPattern: stream), toByteOffset: 32, as: UInt.self)
                c.storeBytes(of: UInt(bitPattern: attributeBytes.baseAddress!), toByteOffset: 40, as: UInt.self)
                c.storeBytes(of: UInt32(1), toByteOffset: 48, as: UInt32.self)
                return cuLaunchKernelEx!(c.baseAddress!, function, parameters, nil)
            }
        }
    }
}

/// Driver enum values used here (cuda.h).
enum CUAttribute {
    static let multiprocessorCount: Int32 = 16
    static let computeCapabilityMajor: Int32 = 75
    static let computeCapabilityMinor: Int32 = 76
    static let maxSharedMemoryPerBlockOptin: Int32 = 97
    static let l2CacheSize: Int32 = 38
    static let funcMaxDynamicSharedSizeBytes: Int32 = 8
    static let funcPreferredSharedMemoryCarveout: Int32 = 9
    static let funcNumRegisters: Int32 = 4
    static let funcLocalSizeBytes: Int32 = 3
    static let streamNonBlocking: UInt32 = 1
    static let captureModeRelaxed: Int32 = 2
    static let eventDefault: UInt32 = 0
    static let eventDisableTiming: UInt32 = 2
    static let launchProgrammaticStreamSerialization: Int32 = 6
}
