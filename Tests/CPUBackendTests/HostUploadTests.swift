import CPUBackend
import Foundation
import LoomCore
import Testing

/// `uploadAsync` as its doc comment states it: rows of `rowBytes` from `pitch`-spaced host rows into
/// the destination's rows, the rest of each destination row untouched; `copyRows`, `zero` and `argmax`.
@Suite struct HostUploadTests {
    let b = CPUBackend()

    @Test func stridedRowsLandInTheDestinationRowsOnly() throws {
        // Host: 3 rows of 4 floats, 6 floats apart; destination: rows 1..<4 of a [5, 8] tensor.
        let host = try b.allocateHost(byteCount: 18 * 4)
        let source = host.pointer.bindMemory(to: Float.self, capacity: 18)
        for i in 0..<18 { source[i] = Float(100 + i) }
        let t = try b.allocate(Shape(5, 8), dtype: .f32)
        b.copy([Float](repeating: -1, count: 40), to: t)
        b.uploadAsync(from: host, offset: 2 * 4, pitch: 6 * 4, to: t.rows(1, 3), rows: 3, rowBytes: 4 * 4)
        b.fenceUploads()
        let got = b.download(t)
        for r in 0..<5 {
            for c in 0..<8 {
                let expected: Float = (1...3).contains(r) && c < 4 ? Float(100 + 2 + (r - 1) * 6 + c) : -1
                #expect(got[r * 8 + c] == expected, "row \(r) column \(c)")
            }
        }
    }

    @Test func zeroAndArgmax() throws {
        let t = try b.allocate(Shape(3, 4), dtype: .f32)
        b.copy([0, 5, 5, 1, 9, -2, 3, 9, -1, -3, -1, -7] as [Float], to: t)
        let ids = try b.allocate(Shape(3), dtype: .i32)
        b.argmax(t, out: ids)
        // First index among ties, as torch.argmax and the CUDA kernel.
        #expect(b.download(ids) == [1, 0, 0])
        b.zero(t.rows(1, 1))
        #expect(b.download(t) == [0, 5, 5, 1, 0, 0, 0, 0, -1, -3, -1, -7])
    }

    @Test func copyRowsFillsTheFirstColumnsOfEachRow() throws {
        // 2 rows of 3 ints into a [4, 5] tensor: columns 3, 4 and rows 2, 3 keep what they held.
        let t = try b.allocate(Shape(4, 5), dtype: .i32)
        b.copy([Int32](repeating: -1, count: 20), to: t)
        b.copyRows([1, 2, 3, 4, 5, 6], width: 3, to: t)
        #expect(b.download(t) == [1, 2, 3, -1, -1, 4, 5, 6, -1, -1] + [Float](repeating: -1, count: 10))
    }
}
