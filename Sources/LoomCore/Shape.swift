/// A tensor shape of rank 1 to 4, stored inline so views cost no allocation in the decode loop.
public struct Shape: Sendable, Equatable, CustomStringConvertible {
    public private(set) var rank: Int
    private var d0: Int, d1: Int, d2: Int, d3: Int

    public init(_ dims: Int...) { self.init(dims) }

    public init(_ dims: [Int]) {
        precondition((1...4).contains(dims.count), "rank \(dims.count) is not supported")
        rank = dims.count
        d0 = dims[0]
        d1 = dims.count > 1 ? dims[1] : 1
        d2 = dims.count > 2 ? dims[2] : 1
        d3 = dims.count > 3 ? dims[3] : 1
    }

    public subscript(_ i: Int) -> Int {
        get {
            precondition(i >= 0 && i < rank)
            switch i { case 0: return d0; case 1: return d1; case 2: return d2; default: return d3 }
        }
        set {
            precondition(i >= 0 && i < rank)
            switch i { case 0: d0 = newValue; case 1: d1 = newValue; case 2: d2 = newValue; default: d3 = newValue }
        }
    }

    public var dims: [Int] { (0..<rank).map { self[$0] } }
    public var count: Int { d0 * d1 * d2 * d3 }
    /// Elements per index of the first dimension.
    public var rowCount: Int { d1 * d2 * d3 }
    public var last: Int { self[rank - 1] }
    public var description: String { "\(dims)" }
}

/// A tensor that lives on a backend: an opaque buffer owned by the backend, an element offset into
/// it, a shape and a dtype. Views share the buffer.
public struct DeviceTensor: @unchecked Sendable {
    public let storage: AnyObject
    /// Offset into `storage`, in elements of `dtype`.
    public let offset: Int
    public let shape: Shape
    public let dtype: DType

    public init(storage: AnyObject, offset: Int = 0, shape: Shape, dtype: DType) {
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.dtype = dtype
    }

    public var count: Int { shape.count }

    /// The first `n` rows (indices of dimension 0).
    public func rows(_ n: Int) -> DeviceTensor {
        rows(0, n)
    }

    /// Rows `start ..< start + n` of dimension 0.
    public func rows(_ start: Int, _ n: Int) -> DeviceTensor {
        precondition(start >= 0 && n >= 0 && start + n <= shape[0], "rows \(start)..<\(start + n) of \(shape)")
        var s = shape
        s[0] = n
        return DeviceTensor(storage: storage, offset: offset + start * shape.rowCount, shape: s, dtype: dtype)
    }

    /// The same elements seen with another shape of the same count.
    public func reshaped(_ newShape: Shape) -> DeviceTensor {
        precondition(newShape.count == count, "cannot reshape \(shape) to \(newShape)")
        return DeviceTensor(storage: storage, offset: offset, shape: newShape, dtype: dtype)
    }

    /// An op's output as copies that each receive the same rows, `[copies, n, width]` (a split
    /// fused group's GEMM inputs, `LoRAApplier.inputBuffer`), or one `[n, width]`: the first copy,
    /// the number of copies, and the elements from one copy to the next.
    public var outputCopies: (first: DeviceTensor, count: Int, stride: Int) {
        guard shape.rank == 3 else { return (self, 1, 0) }
        let n = shape[1], width = shape[2]
        return (reshaped(Shape(shape[0] * n, width)).rows(n), shape[0], n * width)
    }

    /// Whether both are the same elements seen the same way: one storage, offset and shape.
    public func isSameView(as other: DeviceTensor) -> Bool {
        storage === other.storage && offset == other.offset && shape == other.shape && dtype == other.dtype
    }
}
