import LoomCore

/// Host memory owned by a `DeviceTensor` of the CPU backend.
final class CPUStorage {
    let pointer: UnsafeMutableRawPointer
    let byteCount: Int

    init(byteCount: Int) {
        self.byteCount = byteCount
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 16), alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 16))
    }

    deinit { pointer.deallocate() }
}

extension DeviceTensor {
    /// The tensor's elements as `Float` (the CPU backend keeps activations and weights in f32).
    @inline(__always)
    var f32: UnsafeMutablePointer<Float> {
        precondition(dtype == .f32, "CPU backend expects an f32 tensor, got \(dtype)")
        return (storage as! CPUStorage).pointer.assumingMemoryBound(to: Float.self) + offset
    }

    @inline(__always)
    var i32: UnsafeMutablePointer<Int32> {
        precondition(dtype == .i32, "CPU backend expects an i32 tensor, got \(dtype)")
        return (storage as! CPUStorage).pointer.assumingMemoryBound(to: Int32.self) + offset
    }
}

extension DeviceTensor {
    /// The address of the tensor's first element, any dtype.
    var raw: UnsafeMutableRawPointer {
        (storage as! CPUStorage).pointer + offset * dtype.byteCount
    }
}
