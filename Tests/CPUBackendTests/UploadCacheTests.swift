import CPUBackend
import Foundation
import LoomCore
import Testing

/// `UploadCache` skips exactly the copies whose values the buffer already holds from the cache.
/// A buffer written behind the cache's back (here by `zero`) shows which copies ran.
@Suite struct UploadCacheTests {
    let b = CPUBackend()

    func ints(_ t: DeviceTensor) -> [Int32] { b.download(t).map { Int32($0) } }

    @Test func repeatedValuesAreNotCopiedAgain() throws {
        let t = try b.allocate(Shape(4), dtype: .i32)
        var cache = UploadCache()
        cache.copy([1, 2, 3, 4], to: t, on: b)
        #expect(ints(t) == [1, 2, 3, 4])
        b.zero(t)
        cache.copy([1, 2, 3, 4], to: t, on: b)
        #expect(ints(t) == [0, 0, 0, 0], "the same values again: skipped")
        cache.copy([1, 2, 3, 5], to: t, on: b)
        #expect(ints(t) == [1, 2, 3, 5], "one value changed: copied")
        cache.copy([1, 2, 3], to: t, on: b)
        #expect(ints(t) == [1, 2, 3, 5], "a shorter array: copied (its prefix)")
        b.zero(t)
        cache.copy([1, 2, 3, 5], to: t, on: b)
        #expect(ints(t) == [1, 2, 3, 5], "differs from the last copy, not from the first")
    }

    @Test func buffersAndViewsAreKeptApart() throws {
        let t = try b.allocate(Shape(4), dtype: .i32), u = try b.allocate(Shape(4), dtype: .i32)
        var cache = UploadCache()
        cache.copy([7, 7], to: t.rows(2), on: b)
        cache.copy([7, 7], to: t.rows(2, 2), on: b)
        cache.copy([7, 7], to: u.rows(2), on: b)
        #expect(ints(t) == [7, 7, 7, 7])
        #expect(ints(u) == [7, 7, 0, 0])
    }

    /// A buffer allocated where a freed one was (the allocator tends to hand the address back) is a
    /// new buffer: its first copy runs even with the freed buffer's values.
    @Test func aBufferInAFreedOnesPlaceIsCopied() throws {
        var cache = UploadCache()
        for round in 0..<8 {
            let t = try b.allocate(Shape(4), dtype: .i32)
            cache.copy([3, 1, 4, 1], to: t, on: b)
            #expect(ints(t) == [3, 1, 4, 1], "round \(round)")
        }
    }

    @Test func rowsOfAnotherWidthAreCopied() throws {
        let t = try b.allocate(Shape(2, 3), dtype: .i32)
        var cache = UploadCache()
        cache.copyRows([1, 2, 3, 4], width: 2, to: t, on: b)
        #expect(ints(t) == [1, 2, 0, 3, 4, 0])
        b.zero(t)
        cache.copyRows([1, 2, 3, 4], width: 2, to: t, on: b)
        #expect(ints(t) == [0, 0, 0, 0, 0, 0], "same rows: skipped")
        cache.copyRows([1, 2, 3, 4], width: 4, to: t.reshaped(Shape(1, 6)), on: b)
        #expect(ints(t) == [1, 2, 3, 4, 0, 0], "the same values as one row of 4: copied")
    }
}
