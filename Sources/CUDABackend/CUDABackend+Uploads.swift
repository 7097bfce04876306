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

    public func uploadAsync(from source: HostBuffer, offset: Int, pitch: Int, to destination: DeviceTensor, column: Int, rows: Int, rowBytes: Int) {
        precondition(graphState == .eager, "uploads go before a graph step, not inside it")
        let e = destination.dtype.byteCount, destinationPitch = destination.shape.rowCount * e
        precondition(column >= 0 && column * e + rowBytes <= destinationPitch && rows <= destination.shape[0]
                     && offset + (rows - 1) * pitch + rowBytes <= source.byteCount,
                     "uploadAsync: \(rows) rows of \(rowBytes) B into \(destination.shape) from column \(column)")
        if rows == 0 || rowBytes == 0 { return }
        activate()
        if !uploadsQueued {
            // The copy may overwrite what queued kernels still read: start after them.
            wait(copyStream, for: stream)
            uploadsQueued = true
        }
        // Kept alive until the copies finish; a slot load sends many pieces of one buffer.
        if uploadSources.last !== source { uploadSources.append(source) }
        let status = driver.memcpy2DAsync(from: .host(source.pointer + offset), sourcePitch: pitch, toDevice: destination.devicePointer + UInt64(column * e),
                                          destinationPitch: destinationPitch, widthBytes: rowBytes, height: rows, stream: copyStream)
        must(status, "cuMemcpy2DAsync(host → device, \(rowBytes) B × \(rows))")
    }

    public func fenceUploads() {
        guard uploadsQueued else { return }
        activate()
        wait(stream, for: copyStream)
        uploadsQueued = false
    }

    /// Makes `waiter` wait for the work queued on `producer` so far (an event, destroyed once queued:
    /// the driver frees it when it completes; in a graph capture, a dependency between the streams).
    func wait(_ waiter: OpaquePointer?, for producer: OpaquePointer?) {
        var event: OpaquePointer?
        must(driver.cuEventCreate(&event, CUAttribute.eventDisableTiming), "cuEventCreate")
        must(driver.cuEventRecord(event, producer), "cuEventRecord")
        must(driver.cuStreamWaitEvent(waiter, event, 0), "cuStreamWaitEvent")
        _ = driver.cuEventDestroy(event)
    }
}

extension CUDABackend {
    /// Only while a graph is captured (or replayed, when the body's launches are skipped anyway): an
    /// eager step queues the body on the main stream, because the events cost the host more than the
    /// overlap gives (S-LoRA's n = 8 run spent 0.38 ms more per step queueing its mostly eager
    /// prefill steps, and fell from 0.908 to 0.883 of the run without LoRA).
    public func forkSideStream(_ body: () -> Void) -> Bool {
        guard usesSideStream, !onSideStream, graphState != .eager else { return false }
        // Replaying: the body's launches are skipped. A capture that is armed starts here, so that
        // the side stream joins it.
        guard beginLaunch() else {
            body()
            return true
        }
        activate()
        wait(sideStream, for: mainStream)
        onSideStream = true
        defer { onSideStream = false }
        body()
        sideForked = true
        return true
    }

    public func joinSideStream() {
        guard sideForked else { return }
        sideForked = false
        activate()
        wait(mainStream, for: sideStream)
    }
}
