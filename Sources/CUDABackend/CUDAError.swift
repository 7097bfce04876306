/// Every failure of the CUDA driver, NVRTC or cuBLASLt, named after the call that failed.
public enum CUDAError: Error, CustomStringConvertible, Sendable {
    /// A shared library could not be opened; `tried` lists the names and paths attempted.
    case libraryNotFound(library: String, tried: [String], reason: String)
    /// A symbol is missing from a library that did open (a driver or toolkit too old).
    case symbolNotFound(library: String, symbol: String)
    /// The driver loaded but there is no usable GPU.
    case noDevice(String)
    /// A driver API call returned a status other than `CUDA_SUCCESS`.
    case driver(call: String, status: Int32, name: String, message: String)
    /// NVRTC failed to compile a kernel source; `log` is the compiler's output.
    case compilation(kernel: String, status: Int32, message: String, log: String)
    /// A cuBLASLt call returned a status other than `CUBLAS_STATUS_SUCCESS`.
    case cublas(call: String, status: Int32, name: String)
    /// A kernel function is missing from its compiled module.
    case missingKernel(module: String, function: String)
    /// A `LOOM_*` setting the backend reads has a value it cannot use.
    case badSetting(name: String, value: String, expected: String)

    public var description: String {
        switch self {
        case .libraryNotFound(let library, let tried, let reason):
            "CUDA: cannot open \(library) (tried \(tried.joined(separator: ", "))): \(reason)"
        case .symbolNotFound(let library, let symbol):
            "CUDA: \(library) lacks the symbol \(symbol) (driver or toolkit too old?)"
        case .noDevice(let message):
            "CUDA: no usable GPU: \(message)"
        case .driver(let call, let status, let name, let message):
            "CUDA: \(call) failed with \(name) (\(status)): \(message)"
        case .compilation(let kernel, let status, let message, let log):
            "NVRTC: compiling \(kernel) failed with \(message) (\(status)):\n\(log)"
        case .cublas(let call, let status, let name):
            "cuBLASLt: \(call) failed with \(name) (\(status))"
        case .missingKernel(let module, let function):
            "CUDA: kernel \(function) is missing from module \(module)"
        case .badSetting(let name, let value, let expected):
            "CUDA: \(name)=\(value) is not usable: expected \(expected)"
        }
    }

    static func cublasStatusName(_ status: Int32) -> String {
        switch status {
        case 0: "CUBLAS_STATUS_SUCCESS"
        case 1: "CUBLAS_STATUS_NOT_INITIALIZED"
        case 3: "CUBLAS_STATUS_ALLOC_FAILED"
        case 7: "CUBLAS_STATUS_INVALID_VALUE"
        case 8: "CUBLAS_STATUS_ARCH_MISMATCH"
        case 11: "CUBLAS_STATUS_MAPPING_ERROR"
        case 13: "CUBLAS_STATUS_EXECUTION_FAILED"
        case 14: "CUBLAS_STATUS_INTERNAL_ERROR"
        case 15: "CUBLAS_STATUS_NOT_SUPPORTED"
        case 16: "CUBLAS_STATUS_LICENSE_ERROR"
        default: "CUBLAS_STATUS_\(status)"
        }
    }
}
