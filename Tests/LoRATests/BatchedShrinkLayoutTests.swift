import LoomCore
import LoRA
import Testing

/// `LoRAManager.batchedShrinkLayout`, the fused shrink as batched GEMMs: which rows and columns its
/// instances write (every adapted row's own columns, once or, where a run's last instance overlaps,
/// twice; nothing else), from which rows of A, and how they are grouped into calls. Addresses are
/// made-up bases, so the layout is checked as arithmetic (the GPU op checks run it).
@Suite struct BatchedShrinkLayoutTests {
    static let aBase: UInt64 = 1 << 32, inputBase: UInt64 = 1 << 36
    static let k = 64, e = 2

    @Test func runsGroupConsecutiveRowsOfAdaptedSlots() {
        let runs = LoRARowRun.runs(of: [1, 1, 0, 0, 2, 2, 2, 1, 3], slotRanks: [0, 16, 8, 0])
        #expect(runs == [LoRARowRun(row: 0, count: 2, slot: 1), LoRARowRun(row: 4, count: 3, slot: 2), LoRARowRun(row: 7, count: 1, slot: 1)])
        #expect(LoRARowRun.runs(of: [], slotRanks: [0, 16]).isEmpty)
    }

    /// What the instances write: (copy, row, column past K) → times written, and each instance's A row.
    func written(_ layout: (pointers: [UInt64], rows: Int, calls: [LoRABatchedShrink.Call]), rowStride: Int, moduleStride: Int, R: Int, stack: Int)
        -> (cells: [[Int]: Int], aRows: [[Int]]) {
        let count = layout.pointers.count / 3
        var cells: [[Int]: Int] = [:], aRows: [[Int]] = []
        for call in layout.calls {
            for i in call.first..<(call.first + call.count) {
                let a = Int(layout.pointers[i] - Self.aBase) / Self.e, x = Int(layout.pointers[count + i] - Self.inputBase) / Self.e
                let out = Int(layout.pointers[2 * count + i] - Self.inputBase) / Self.e
                #expect(a % Self.k == 0 && x % rowStride == 0)
                let row = x / rowStride, copy = moduleStride > 0 ? out / moduleStride : 0, inCopy = out - copy * moduleStride
                #expect(inCopy / rowStride == row, "instance \(i) reads row \(row) and writes row \(inCopy / rowStride)")
                let column = inCopy % rowStride - Self.k
                aRows.append([a / Self.k, column, call.columns, row])
                for r in row..<(row + layout.rows) {
                    for c in column..<(column + call.columns) { cells[[copy, r, c], default: 0] += 1 }
                }
            }
        }
        return (cells, aRows)
    }

    @Test func instancesCoverEachAdaptedRowsOwnColumnsOnly() throws {
        // q/k/v-like, 3 modules of rank 16: slot 1 whole (one scaling), slot 2 of rank 8 by module,
        // slot 3 whole; runs of 64, 100 (overlapping last instance) and 130 rows, base rows between.
        let R = 16, stack = 3, slots = 4, rows = 64 + 10 + 100 + 130
        let rowSlots = [Int32](repeating: 1, count: 64) + [Int32](repeating: 0, count: 10) + [Int32](repeating: 2, count: 100)
            + [Int32](repeating: 3, count: 130)
        let slotRanks: [Int32] = [0, 16, 8, 16]
        let scalings: [Float] = [0, 0, 0, 2, 2, 2, 0.5, 0.5, 0.5, 2, 2, 2]
        let rowStride = Self.k + slots * stack * R
        let layout = try #require(LoRAManager.batchedShrinkLayout(
            runs: LoRARowRun.runs(of: rowSlots, slotRanks: slotRanks), rows: 64, slotRanks: slotRanks, scalings: scalings, stack: stack, rank: R,
            k: Self.k, rowStride: rowStride, moduleStride: 0, a: Self.aBase, input: Self.inputBase, elementBytes: Self.e))
        #expect(layout.rows == 64)
        // Calls: whole slots at scaling 2 (1 + 3 instances), slot 2's modules at 0.5 (2 × 3 instances).
        #expect(Set(layout.calls.map { "\($0.columns) \($0.scaling) \($0.count)" }) == ["48 2.0 4", "8 0.5 6"])
        #expect(layout.calls.map(\.count).reduce(0, +) == layout.pointers.count / 3)
        let (cells, aRows) = written(layout, rowStride: rowStride, moduleStride: 0, R: R, stack: stack)
        for row in 0..<rows {
            let slot = Int(rowSlots[row]), rank = Int(slotRanks[slot])
            for c in 0..<(slots * stack * R) {
                let own = slot > 0 && c / (stack * R) == slot && c % R < rank
                let times = cells[[0, row, c], default: 0]
                #expect(own ? times >= 1 : times == 0, "row \(row) column \(c): written \(times) times")
            }
        }
        // The 100-row run's second instance overlaps its first by 28 rows.
        #expect(cells[[0, 74 + 50, 2 * stack * R]] == 2 && cells[[0, 74, 2 * stack * R]] == 1)
        // Each instance reads the A rows of its own slot and module: A row = column (both slot·stack·R + m·R).
        #expect(aRows.allSatisfy { $0[0] == $0[1] })
    }

    @Test func splitExtensionsWriteEachModulesCopy() throws {
        // gate/up-like: 2 modules, each its own copy with R columns a slot.
        let R = 8, stack = 2, slots = 3, n = 128
        let rowSlots = [Int32](repeating: 2, count: n)
        let rowStride = Self.k + slots * R, moduleStride = n * rowStride
        let layout = try #require(LoRAManager.batchedShrinkLayout(
            runs: LoRARowRun.runs(of: rowSlots, slotRanks: [0, 8, 8]), rows: 64, slotRanks: [0, 8, 8], scalings: [0, 0, 1, 1, 0.25, 0.25], stack: stack, rank: R,
            k: Self.k, rowStride: rowStride, moduleStride: moduleStride, a: Self.aBase, input: Self.inputBase, elementBytes: Self.e))
        #expect(layout.calls == [LoRABatchedShrink.Call(first: 0, count: 4, columns: 8, scaling: 0.25)])
        let (cells, aRows) = written(layout, rowStride: rowStride, moduleStride: moduleStride, R: R, stack: stack)
        #expect(cells.count == stack * n * R && cells.values.allSatisfy { $0 == 1 })
        for copy in 0..<stack {
            #expect((0..<n).allSatisfy { row in (0..<R).allSatisfy { cells[[copy, row, 2 * R + $0]] == 1 } })
        }
        // Module m's instances read slot 2's rows m·R…: A rows 2·stack·R + m·R.
        #expect(Set(aRows.map { $0[0] }) == [2 * stack * R, 2 * stack * R + R])
    }

    @Test func declinesShortRunsManyCallsAndMisalignedWidths() {
        func layout(rowSlots: [Int32], scalings: [Float], R: Int = 16, k: Int = 64) -> (pointers: [UInt64], rows: Int, calls: [LoRABatchedShrink.Call])? {
            let slotRanks: [Int32] = [0] + [Int32](repeating: Int32(R), count: 5)
            return LoRAManager.batchedShrinkLayout(runs: LoRARowRun.runs(of: rowSlots, slotRanks: slotRanks), rows: 64, slotRanks: slotRanks, scalings: scalings,
                                                   stack: 1, rank: R, k: k, rowStride: k + 6 * R, moduleStride: 0, a: Self.aBase,
                                                   input: Self.inputBase, elementBytes: Self.e)
        }
        let long = (1...5).flatMap { [Int32](repeating: Int32($0), count: 64) }
        #expect(layout(rowSlots: long, scalings: [0, 1, 1, 1, 1, 1]) != nil)
        // A run of 63 rows.
        #expect(layout(rowSlots: [Int32](long.dropLast()), scalings: [0, 1, 1, 1, 1, 1]) == nil)
        // Five distinct scalings: five calls.
        #expect(layout(rowSlots: long, scalings: [0, 1, 2, 3, 4, 5]) == nil)
        // Rank 12: columns not whole 16-byte pieces.
        #expect(layout(rowSlots: long, scalings: [0, 1, 1, 1, 1, 1], R: 12) == nil)
        // A module the adapter leaves alone (scaling 0) gets no instance.
        #expect(layout(rowSlots: long, scalings: [0, 1, 0, 1, 1, 1])?.calls.map(\.count) == [4])
    }
}
