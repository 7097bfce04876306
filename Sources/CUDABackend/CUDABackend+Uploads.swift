import LoomCore

/// Asynchronous uploads from page-locked host memory on a copy stream (LoRA slot loads): the copy
/// engine moves an adapter while the SMs run the steps already queued, and only the kernels queued
/// after `fenceUploads` wait for it.
extension CUDABackend {
    public func allocateHost(byteCount: Int) throws -> HostBuffer {
        activate()
        var pointer: UnsafeMutableRawPointer?
        try driver.check(driver.cuMemHostAlloc(&pointer, max(byteCount, 1), 0), "cuMemHostAlloc(\(byteCount) bytes)")
        let driver = self.driver
        return HostBuffer(pointer: pointer!, byteCount: byteCount) { _ = driver.cuMemFreeHost($0) }
    }

    public func uploadAsync(from source: HostBuffer, offset: Int, pitch: Int, to destination: DeviceTensor, rows: Int, rowBytes: Int) {
        precondition(graphState == .eager, "uploads go before a graph step, not inside it")
        let destinationPitch = destination.shape.rowCount * destination.dtype.byteCount
        precondition(rowBytes <= destinationPitch && rows <= destination.shape[0] && offset + (rows - 1) * pitch + rowBytes <= source.byteCount,
                     "uploadAsync: \(rows) rows of \(rowBytes) B into \(destination.shape)")
        if rows == 0 || rowBytes == 0 { return }
        activate()
        if !uploadsQueued {
            // The copy may overwrite what queued kernels still read: start after them.
            wait(copyStream, for: stream)
            uploadsQueued = true
        }
        uploadSources.append(source)
        // CUDA_MEMCPY2D: 16 eight-byte fields; memory types are 4-byte enums padded to 8.
        let host: UInt64 = 1, device: UInt64 = 2
        var p = [UInt64](repeating: 0, count: 16)
        p[2] = host; p[3] = UInt64(UInt(bitPattern: source.pointer + offset)); p[6] = UInt64(pitch)
        p[9] = device; p[11] = destination.devicePointer; p[13] = UInt64(destinationPitch)
        p[14] = UInt64(rowBytes); p[15] = UInt64(rows)
        let status = p.withUnsafeBytes { driver.cuMemcpy2DAsync($0.baseAddress!, copyStream) }
        must(status, "cuMemcpy2DAsync(host → device, \(rowBytes) B × \(rows))")
    }

    public func fenceUploads() {
        guard uploadsQueued else { return }
        activate()
        wait(stream, for: copyStream)
        uploadsQueued = false
    }

    /// Makes `waiter` wait for the work queued on `producer` so far (an event, destroyed once queued:
    /// the driver frees it when it completes).
    private func wait(_ waiter: OpaquePointer?, for producer: OpaquePointer?) {
        var event: OpaquePointer?
        must(driver.cuEventCreate(&event, CUAttribute.eventDisableTiming), "cuEventCreate")
        must(driver.cuEventRecord(event, producer), "cuEventRecord")
        must(driver.cuStreamWaitEvent(waiter, event, 0), "cuStreamWaitEvent")
        _ = driver.cuEventDestroy(event)
    }
}
