/// The values last copied into persistent device buffers, so that a step whose metadata repeats
/// what a buffer already holds skips that copy: consecutive decode steps share their LoRA plan, the
/// rows that want logits, the query starts and, for 16 steps at a time, the block tables. On a GPU
/// each copy from pageable memory costs the host microseconds while the device waits for the step.
/// Every write into the buffers must go through one cache.
public struct UploadCache {
    private struct Key: Hashable {
        let storage: ObjectIdentifier
        let offset: Int
    }
    /// What a buffer was last given. The storage is held weakly and compared: a buffer freed and
    /// another allocated at its address (the same `ObjectIdentifier`) is a new buffer.
    private struct Held {
        weak var storage: AnyObject?
        var values: [Int32]
        var width: Int
    }
    private var last: [Key: Held] = [:]

    public init() {}

    /// `backend.copy(values, to: tensor)` unless `tensor` already holds `values`.
    public mutating func copy(_ values: [Int32], to tensor: DeviceTensor, on backend: ComputeBackend) {
        guard record(values, width: 0, tensor) else { return }
        backend.copy(values, to: tensor)
    }

    /// `backend.copyRows(values, width:, to: tensor)` unless `tensor` already holds them.
    public mutating func copyRows(_ values: [Int32], width: Int, to tensor: DeviceTensor, on backend: ComputeBackend) {
        guard record(values, width: width, tensor) else { return }
        backend.copyRows(values, width: width, to: tensor)
    }

    /// Whether the copy is needed; records the values as the buffer's.
    private mutating func record(_ values: [Int32], width: Int, _ tensor: DeviceTensor) -> Bool {
        let key = Key(storage: ObjectIdentifier(tensor.storage), offset: tensor.offset)
        if let held = last[key], held.storage === tensor.storage, held.width == width, held.values == values { return false }
        last[key] = Held(storage: tensor.storage, values: values, width: width)
        return true
    }
}
