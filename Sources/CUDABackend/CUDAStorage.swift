import LoomCore

/// Device memory owned by a `DeviceTensor` of the CUDA backend; freed when the last view goes.
final class CUDAStorage {
    let pointer: UInt64
    let byteCount: Int
    private let driver: Driver

    init(driver: Driver, byteCount: Int) throws {
        var p: UInt64 = 0
        try driver.check(driver.cuMemAlloc(&p, max(byteCount, 256)), "cuMemAlloc(\(byteCount) bytes)")
        pointer = p
        self.byteCount = byteCount
        self.driver = driver
    }

    deinit { _ = driver.cuMemFree(pointer) }
}

extension DeviceTensor {
    /// The device address of the tensor's first element.
    var devicePointer: UInt64 {
        guard let s = storage as? CUDAStorage else {
            preconditionFailure("the CUDA backend got a tensor of another backend (\(type(of: storage)))")
        }
        return s.pointer + UInt64(offset * dtype.byteCount)
    }
}
