import LoomCore

extension CUDABackend {
    private func bf16(_ t: DeviceTensor, _ op: String) {
        precondition(t.dtype == .bf16, "\(op): the CUDA backend expects bf16 activations, got \(t.dtype)")
    }

    private func i32(_ t: DeviceTensor, _ op: String) {
        precondition(t.dtype == .i32, "\(op): expects an i32 tensor, got \(t.dtype)")
    }

    public func embed(tokens: DeviceTensor, table: DeviceTensor, out: DeviceTensor) {
        let n = tokens.count, d = table.shape[1]
        i32(tokens, "embed"); bf16(table, "embed"); bf16(out, "embed")
        precondition(out.shape[0] >= n && out.shape.rowCount == d)
        if n == 0 { return }
        launch("loom_embed", grid: (n, 1, 1), block: 128,
               [.pointer(tokens.devicePointer), .pointer(table.devicePointer), .pointer(out.devicePointer), .int(d), .int(table.shape[0])])
    }

    public func rmsNorm(_ x: DeviceTensor, weight: DeviceTensor, eps: Float, out: DeviceTensor) {
        let n = x.shape[0], d = x.shape.rowCount, first = out.outputCopies.first
        bf16(x, "rmsNorm"); bf16(weight, "rmsNorm"); bf16(out, "rmsNorm")
        precondition(weight.count == d && first.shape.rowCount >= d && first.shape[0] >= n, "rmsNorm: \(x.shape) into \(out.shape)")
        norm(residual: x, x, weight: weight, eps: eps, out: out, add: false)
    }

    public func addRMSNorm(residual: DeviceTensor, _ x: DeviceTensor, weight: DeviceTensor, eps: Float, out: DeviceTensor, lora: LoRADelta?) {
        let d = residual.shape.rowCount, stride = x.shape.rowCount
        bf16(residual, "addRMSNorm"); bf16(x, "addRMSNorm"); bf16(weight, "addRMSNorm"); bf16(out, "addRMSNorm")
        precondition(weight.count == d && out.outputCopies.first.shape.rowCount >= d && (stride == d || (lora?.width == d && stride >= d)),
                     "addRMSNorm: x \(x.shape) for residual \(residual.shape) into \(out.shape)")
        norm(residual: residual, x, weight: weight, eps: eps, out: out, add: true, lora: lora)
    }

    public func addRMSNorm(residual: DeviceTensor, slices: DeviceTensor, weight: DeviceTensor, eps: Float, out: DeviceTensor, lora: LoRADelta?) {
        let n = residual.shape[0], d = residual.shape.rowCount
        bf16(residual, "addRMSNorm"); bf16(weight, "addRMSNorm"); bf16(out, "addRMSNorm")
        precondition(slices.dtype == .f32 && slices.shape.rank == 3 && slices.shape[1] == n
                     && (slices.shape[2] == d || (lora?.width == d && slices.shape[2] >= d)),
                     "addRMSNorm: f32 slices [S, \(n), \(d)] expected, got \(slices.dtype) \(slices.shape)")
        precondition(weight.count == d && out.outputCopies.first.shape.rowCount >= d)
        norm(residual: residual, residual, weight: weight, eps: eps, out: out, add: true, slices: slices, lora: lora)
    }

    /// `slices`: x is the sum of their rows (f32) instead of `x`. Rows of `x` (or of each slice) are
    /// `x.shape.rowCount` (`slices.shape[2]`) apart; residual is `[n, d]`, out `[n, ≥ d]` (its first d
    /// columns) or copies of it, `[copies, n, ≥ d]` (`DeviceTensor.outputCopies`).
    private func norm(residual: DeviceTensor, _ x: DeviceTensor, weight: DeviceTensor, eps: Float, out copies: DeviceTensor, add: Bool,
                      slices: DeviceTensor? = nil, lora: LoRADelta? = nil) {
        let n = residual.shape[0], d = residual.shape.rowCount, stride = slices?.shape[2] ?? x.shape.rowCount
        let (out, copyCount, copyStride) = copies.outputCopies
        precondition(out.shape[0] >= n && copyStride % 8 == 0, "norm: \(n) rows into \(copies.shape)")
        if n == 0 { return }
        precondition(lora == nil || lora!.stack * lora!.rank <= 256, "addRMSNorm: a LoRA delta of \(lora!.stack) × rank \(lora!.rank) exceeds 256")
        if lora != nil || (usesClusterNorm && n <= clusterNormRows), add, copyCount == 1, d % 16 == 0, d <= 8192, stride % 4 == 0, out.shape.rowCount == d,
           slices.map({ $0.devicePointer % 16 == 0 }) ?? true, (residual.devicePointer | x.devicePointer | weight.devicePointer | out.devicePointer) % 8 == 0 {
            // A cluster of 4 blocks a row, a thread for each 4 columns (loom_norm_lora).
            launch("loom_norm_lora", grid: (4, n, 1), block: max(32, (d / 16 + 31) / 32 * 32), sharedBytes: d,
                   [.pointer(residual.devicePointer), .pointer(x.devicePointer), .pointer(weight.devicePointer),
                    .pointer(out.devicePointer), .int(d), .float(eps),
                    .pointer(slices?.devicePointer ?? 0), .int(slices?.shape[0] ?? 0), .u64(UInt64(n * stride)), .int(stride)]
                    + loraArguments(lora, "addRMSNorm"))
            return
        }
        // One 16-byte vector per thread where the row allows it (the kernel checks alignment itself).
        let vectors = d / 8
        // With a delta, twice the threads (at most 1024) share the streaming of B before the norm.
        let block = min(1024, (lora == nil ? 1 : 2) * (d % 8 == 0 && vectors <= 4 * 1024 ? max(32, (vectors + 31) / 32 * 32) : 256))
        // A delta's columns are staged in shared memory (d floats).
        let sharedBytes = lora == nil ? 0 : 4 * d
        if sharedBytes > 48 * 1024 { raiseSharedLimit("loom_norm", bytes: sharedBytes) }
        launch("loom_norm", grid: (n, 1, 1), block: block, sharedBytes: sharedBytes,
               [.pointer(residual.devicePointer), .pointer(x.devicePointer), .pointer(weight.devicePointer),
                .pointer(out.devicePointer), .int(d), .float(eps), .int(add ? 1 : 0),
                .pointer(slices?.devicePointer ?? 0), .int(slices?.shape[0] ?? 0), .u64(UInt64(n * stride)), .int(stride),
                .int(out.shape.rowCount), .int(copyCount), .u64(UInt64(copyStride))] + loraArguments(lora, "addRMSNorm"))
    }

    /// A LoRA delta as the consuming kernels take it (LORA_PARAMS); all zero for none.
    private func loraArguments(_ lora: LoRADelta?, _ op: String) -> [KernelArgument] {
        guard let lora else { return [.pointer(0), .pointer(0), .pointer(0), .pointer(0), .int(0), .int(0), .int(0), .int(0), .int(0)] }
        bf16(lora.b, op); i32(lora.rowSlots, op); i32(lora.slotRanks, op)
        precondition(lora.scalings.dtype == .f32 && (1...3).contains(lora.stack) && lora.b.shape.rank == 3 && lora.b.shape[1] == lora.width
                     && lora.scalings.count >= lora.b.shape[0] * lora.stack, "\(op): LoRA delta B \(lora.b.shape), offsets \(lora.outOffsets)")
        let o1 = lora.stack > 1 ? lora.outOffsets[1] : lora.width, o2 = lora.stack > 2 ? lora.outOffsets[2] : lora.width
        return [.pointer(lora.b.devicePointer), .pointer(lora.scalings.devicePointer), .pointer(lora.rowSlots.devicePointer),
                .pointer(lora.slotRanks.devicePointer), .int(lora.rank), .int(lora.stack), .int(o1), .int(o2), .int(lora.width)]
    }

    public func linearSlices(_ x: DeviceTensor, weight: DeviceTensor, out: DeviceTensor) {
        let n = x.shape[0], width = x.shape.rowCount, count = out.shape[0], m = weight.shape[0], ldWeight = weight.shape.rowCount
        precondition(x.dtype == .bf16 && weight.dtype == .bf16 && out.dtype == .f32, "linearSlices: bf16 · bf16 into f32 expected")
        precondition(out.shape.rank == 3 && out.shape[1] == n && out.shape[2] == m && width % count == 0 && (width / count) % 8 == 0
                     && ldWeight >= width && (ldWeight == width || ldWeight % 8 == 0),
                     "linearSlices: x \(x.shape) · weightᵀ \(weight.shape) into \(out.shape)")
        if n == 0 { return }
        let k = width / count
        blasMatmul(x, weight, out, n: n, m: m, k: k, ldInput: width, batch: count, label: "cublasLt \(count)x\(n)x\(m)x\(k)")
    }

    public func linearStacked(_ x: DeviceTensor, weight: DeviceTensor, out: DeviceTensor) {
        let count = x.shape[0], n = x.shape[1], k = x.shape[2], ldWeight = weight.shape.rowCount
        precondition(x.dtype == .bf16 && weight.dtype == .bf16 && (out.dtype == .bf16 || out.dtype == .f32),
                     "linearStacked: bf16 operands into bf16 or f32 expected")
        precondition(x.shape.rank == 3 && weight.shape[0] % count == 0 && ldWeight >= k && (ldWeight == k || ldWeight % 8 == 0),
                     "linearStacked: x \(x.shape) · weightᵀ \(weight.shape)")
        let m = weight.shape[0] / count
        precondition(out.shape[0] == n && out.shape.rowCount == count * m, "linearStacked: out \(out.shape) for \(n)×\(count)·\(m)")
        if n == 0 { return }
        blasMatmul(x, weight, out, n: n, m: m, k: k, batch: count, strides: (weight: m * ldWeight, input: n * k, output: m),
                   label: "cublasLt \(count)x\(n)x\(m)x\(k) stacked")
    }

    /// Rows above `maxGEMVRows` (GEMV reads W once however many rows) and up to 64, where one
    /// GEMM's output tiles are too few for the multiprocessors, and K of at least 1024 (a small
    /// model's GEMM is not bound by its weight): 2 slices. On the H200 at batch 32, 2 and 4 gave the
    /// same step time within noise, both 1.5 to 2.5% under cuBLASLt's split-K GEMM and its reduction kernel.
    public func residualSliceCount(rows: Int, outFeatures: Int, inFeatures: Int) -> Int {
        func fits(_ count: Int) -> Bool { inFeatures % count == 0 && (inFeatures / count) % 8 == 0 }
        if let residualSlices { return fits(residualSlices) ? residualSlices : 1 }
        return rows > maxGEMVRows && rows <= 64 && inFeatures >= 1024 && fits(2) ? 2 : 1
    }

    public func linear(_ x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor?, out: DeviceTensor) {
        linear(x, weight: weight, bias: bias, out: out, tiledAs: 0)
    }

    public func linear(_ x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor?, out: DeviceTensor, tiledAs baseRows: Int) {
        if x.shape[0] == 0 { return }
        gemm(x, weight, out, tilingRows: baseRows)
        if let bias {
            let n = out.shape[0], width = bias.count
            precondition(width <= out.shape.rowCount && bias.dtype == .bf16 && out.dtype == .bf16, "linear: bias \(bias.shape) for out \(out.shape)")
            launch("loom_add_bias", grid: ((n * width + 255) / 256, 1, 1), block: 256,
                   [.pointer(out.devicePointer), .pointer(bias.devicePointer), .int(n), .int(width), .int(out.shape.rowCount)])
        }
    }

    public func ropeAndWriteKV(qkv: DeviceTensor, positions: DeviceTensor, inverseFrequencies: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor,
                               slotMapping: DeviceTensor, numHeads: Int, numKVHeads: Int, headDim: Int, lora: LoRADelta?) {
        let n = qkv.shape[0]
        let op = "ropeAndWriteKV", heads = numHeads + 2 * numKVHeads, kvSize = numKVHeads * headDim
        bf16(qkv, op); i32(positions, op); bf16(kCache, op); bf16(vCache, op); i32(slotMapping, op)
        precondition(inverseFrequencies.dtype == .f32 && inverseFrequencies.count >= headDim / 2, "\(op): f32 inverse frequencies of headDim/2")
        precondition(qkv.shape.rowCount >= heads * headDim && headDim % 2 == 0, "\(op): qkv \(qkv.shape) for \(heads) heads of \(headDim)")
        precondition(kCache.shape.rowCount == kvSize && vCache.shape.rowCount == kvSize, "\(op): caches \(kCache.shape) for kvSize \(kvSize)")
        precondition(lora == nil || lora!.width == heads * headDim, "\(op): a LoRA delta of width \(lora!.width) for \(heads) heads")
        if n == 0 { return }
        // A thread per rotated pair, whole warps; `ropeHeadsPerBlock` heads a block.
        let lanes = max(32, (headDim / 2 + 31) / 32 * 32), perBlock = max(1, min(ropeHeadsPerBlock, heads, 1024 / lanes))
        launch("loom_rope_write_kv", grid: (n, (heads + perBlock - 1) / perBlock, 1), block: (lanes, perBlock, 1),
               [.pointer(qkv.devicePointer), .pointer(positions.devicePointer), .pointer(inverseFrequencies.devicePointer),
                .int(qkv.shape.rowCount), .int(headDim), .pointer(kCache.devicePointer), .pointer(vCache.devicePointer),
                .pointer(slotMapping.devicePointer), .int(numHeads), .int(numKVHeads)] + loraArguments(lora, op))
    }

    public func attention(qkv: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor, out: DeviceTensor, metadata: AttentionMetadata, numHeads: Int, numKVHeads: Int, headDim: Int) {
        bf16(qkv, "attention"); bf16(kCache, "attention"); bf16(vCache, "attention"); bf16(out, "attention")
        i32(metadata.queryStarts, "attention"); i32(metadata.contextLengths, "attention"); i32(metadata.blockTables, "attention")
        let n = qkv.shape[0], group = numHeads / numKVHeads
        precondition(group * numKVHeads == numHeads && group <= 8, "attention: \(numHeads) heads over \(numKVHeads) KV heads (at most 8 per KV head)")
        precondition(headDim <= 256, "attention: head_dim \(headDim) > 256 is not supported")
        precondition(out.shape.rank == 2 && out.shape.rowCount >= numHeads * headDim && out.shape[0] >= n, "attention: out \(out.shape)")
        if n == 0 || metadata.numSequences == 0 { return }
        let chunk = 128
        let blocks = n * numKVHeads
        let dimsPerLane = [1, 2, 4, 8].first { 32 * $0 >= headDim }!
        let groupBound = [1, 2, 4, 8].first { $0 >= group }!
        let isDecodeOnly = metadata.maxQueryLength == 1 && metadata.numSequences == n
        let usesDecodeKernel = usesDecodeAttention && isDecodeOnly && (headDim == 64 || headDim == 128) && group >= 3
            && (kCache.devicePointer | vCache.devicePointer) % 16 == 0
        // Few (row, KV head) blocks: split the sequence into pieces of at least 32 tokens so that
        // about `perSM` blocks per multiprocessor run; a decode step is a latency chain per block.
        let perSM = attentionBlocksPerSM ?? (usesDecodeKernel ? 2 : 4)
        let target = blocks < (perSM + 1) / 2 * multiprocessorCount ? (perSM * multiprocessorCount + blocks - 1) / blocks : 1
        var splitTokens: Int, splits: Int
        if isRecordingGraph {
            // The context grows from replay to replay: a fixed number of splits, each row's
            // visible tokens shared among them on the device (splitTokens 0).
            let capacity = metadata.blockTables.shape[1] * metadata.blockSize
            splits = max(1, min(target, capacity / 32))
            splitTokens = 0
        } else {
            let context = metadata.maxContextLength
            splitTokens = max(chunk, (context + 31) / 32 * 32)
            if target > 1 { splitTokens = min(splitTokens, max(32, ((context + target - 1) / target + 31) / 32 * 32)) }
            splits = max(1, (context + splitTokens - 1) / splitTokens)
        }
        var partial: (UInt64, UInt64, UInt64) = (0, 0, 0)
        if splits > 1 {
            let entries = n * numHeads * splits
            let scratch = attentionScratch(bytes: 4 * entries * (headDim + 2))
            partial = (scratch, scratch + UInt64(4 * entries * headDim), scratch + UInt64(4 * entries * (headDim + 1)))
        }
        let kernel: String, sharedBytes: Int
        if usesDecodeKernel && usesDecodeAttentionMMA {
            // Four warps, each a ring of three 16-token steps of K and V rows.
            let paged = usesPagedDecodeAttention && metadata.blockSize % 16 == 0 && out.devicePointer % 8 == 0 && out.shape.rowCount % 4 == 0
            kernel = "loom_attention_decode_mma\(paged ? "_paged" : "")_d\(headDim)_g\(groupBound)"
            sharedBytes = 4 * 3 * 2 * 16 * headDim * 2
            raiseSharedLimit(kernel, bytes: sharedBytes)
        } else if usesDecodeKernel {
            kernel = "loom_attention_decode_d\(dimsPerLane)_g\(groupBound)"
            sharedBytes = 0
        } else {
            kernel = "loom_attention_d\(dimsPerLane)_g\(groupBound)"
            sharedBytes = 4 * max(group * (headDim + chunk), 4 * headDim)
        }
        launch(kernel, grid: (n, numKVHeads, splits), block: chunk, sharedBytes: sharedBytes,
               [.pointer(qkv.devicePointer), .int(qkv.shape.rowCount), .pointer(kCache.devicePointer), .pointer(vCache.devicePointer),
                .int(numKVHeads * headDim), .pointer(out.devicePointer), .int(out.shape.rowCount),
                .pointer(metadata.queryStarts.devicePointer), .pointer(metadata.contextLengths.devicePointer),
                .pointer(metadata.blockTables.devicePointer), .int(metadata.blockTables.shape[1]), .int(metadata.numSequences),
                .int(numHeads), .int(numKVHeads), .int(headDim), .int(metadata.blockSize), .float(1 / Float(headDim).squareRoot()),
                .int(splitTokens), .pointer(partial.0), .pointer(partial.1), .pointer(partial.2)])
        if splits > 1 {
            launch("loom_attention_combine", grid: (n, numHeads, 1), block: 128,
                   [.pointer(partial.0), .pointer(partial.1), .pointer(partial.2), .pointer(out.devicePointer),
                    .int(out.shape.rowCount), .int(numHeads), .int(headDim), .int(splits)])
        }
    }

    /// Lets `function` launch with `bytes` of dynamic shared memory (static and dynamic together
    /// above 48 KiB must opt in).
    func raiseSharedLimit(_ function: String, bytes: Int) {
        guard !raisedSharedLimits.contains(function), let f = kernels.functions[function] else { return }
        activate()
        must(driver.cuFuncSetAttribute(f, CUAttribute.funcMaxDynamicSharedSizeBytes, Int32(bytes)), "cuFuncSetAttribute(\(function), \(bytes) shared bytes)")
        raisedSharedLimits.insert(function)
    }

    /// A device buffer of at least `bytes` for split attention; grows by allocating a new one.
    private func attentionScratch(bytes: Int) -> UInt64 {
        if let last = attentionScratch.last, last.byteCount >= bytes { return last.pointer }
        activate()
        do {
            let storage = try CUDAStorage(driver: driver, byteCount: max(bytes, 1 << 20))
            attentionScratch.append(storage)
            return storage.pointer
        } catch {
            fail(error)
        }
    }

    public func siluMul(_ gateUp: DeviceTensor, out: DeviceTensor, lora: LoRADelta?) {
        let n = gateUp.shape[0], stride = gateUp.shape.rowCount, width = (lora?.width ?? stride) / 2
        bf16(gateUp, "siluMul"); bf16(out, "siluMul")
        precondition(stride >= 2 * width && out.shape.rank == 2 && out.shape.rowCount >= width, "siluMul: \(gateUp.shape) into \(out.shape)")
        if n == 0 { return }
        guard let lora else {
            let aligned = (gateUp.devicePointer | out.devicePointer) % 16 == 0 && (width | stride | out.shape.rowCount) % 8 == 0
            if usesVectorSiLU && aligned {
                launch("loom_silu_mul_v8", grid: (n, (width + 2047) / 2048, 1), block: 256,
                       [.pointer(gateUp.devicePointer), .pointer(out.devicePointer), .int(width), .int(stride), .int(out.shape.rowCount)])
                return
            }
            launch("loom_silu_mul", grid: (n, (width + 255) / 256, 1), block: 256,
                   [.pointer(gateUp.devicePointer), .pointer(out.devicePointer), .int(width), .int(stride), .int(out.shape.rowCount)])
            return
        }
        // A block per slot and 512 columns, reading the slot's B once for its rows.
        precondition(n <= 1024 && 2 * lora.rank <= 256, "siluMul: a LoRA delta over \(n) rows (at most 1024) of rank \(lora.rank)")
        launch("loom_silu_mul_lora", grid: ((width + 511) / 512, lora.b.shape[0], 1), block: 256,
               [.pointer(gateUp.devicePointer), .pointer(out.devicePointer), .int(width), .int(stride), .int(n), .int(out.shape.rowCount)]
                + loraArguments(lora, "siluMul"))
    }

    public func gatherRows(_ x: DeviceTensor, rows: DeviceTensor, out: DeviceTensor) {
        bf16(x, "gatherRows"); bf16(out, "gatherRows"); i32(rows, "gatherRows")
        let m = rows.count, width = x.shape.rowCount
        precondition(out.shape.rowCount == width && out.shape[0] >= m)
        if m == 0 { return }
        launch("loom_gather_rows", grid: (m, 1, 1), block: 128,
               [.pointer(x.devicePointer), .pointer(rows.devicePointer), .pointer(out.devicePointer), .int(width)])
    }

    public func convert(_ x: DeviceTensor, out: DeviceTensor) {
        precondition(x.count == out.count, "convert: \(x.shape) into \(out.shape)")
        precondition([x.dtype, out.dtype].allSatisfy { $0 == .bf16 || $0 == .f32 }, "convert: \(x.dtype) into \(out.dtype)")
        if x.count == 0 { return }
        launch("loom_convert", grid: ((x.count + 255) / 256, 1, 1), block: 256,
               [.pointer(x.devicePointer), .int(x.dtype == .f32 ? 1 : 0), .pointer(out.devicePointer), .int(out.dtype == .f32 ? 1 : 0),
                .u64(UInt64(x.count))])
    }

    /// Greedy sampling on the device: `out[i] = argmax(logits[i])` (first index among ties).
    public func argmax(_ logits: DeviceTensor, out: DeviceTensor) {
        i32(out, "argmax")
        precondition(logits.dtype == .bf16 || logits.dtype == .f32, "argmax: bf16 or f32 logits")
        let n = logits.shape[0]
        precondition(out.count >= n)
        if n == 0 { return }
        let vocab = logits.shape.rowCount, capacity = Self.argmaxRowCapacity
        let tickets = argmaxScratch.pointer + UInt64(8 * capacity)
        // Enough slices of a row for two blocks a multiprocessor, none under 2,048 logits.
        let slices = max(1, min((2 * multiprocessorCount + n - 1) / n, (vocab + 2047) / 2048))
        for start in stride(from: 0, to: n, by: capacity) {
            let rows = min(capacity, n - start)
            launch("loom_argmax", grid: (rows, slices, 1), block: 256,
                   [.pointer(logits.devicePointer + UInt64(start * vocab * logits.dtype.byteCount)), .int(logits.dtype == .f32 ? 1 : 0),
                    .pointer(out.devicePointer + UInt64(4 * start)), .int(vocab), .pointer(argmaxScratch.pointer), .pointer(tickets)])
        }
    }

    public func loraShrink(_ x: DeviceTensor, a: DeviceTensor, out: DeviceTensor, plan: LoRAKernelPlan, stack: Int) {
        let n = out.shape[0], k = x.shape.rowCount, slotWidth = a.shape[1], maxRank = slotWidth / stack
        bf16(x, "loraShrink"); bf16(a, "loraShrink"); i32(plan.permutation, "loraShrink")
        precondition(a.shape[2] == k && out.shape.rowCount == slotWidth && (out.dtype == .f32 || out.dtype == .bf16),
                     "loraShrink: x \(x.shape), A \(a.shape), out \(out.dtype) \(out.shape)")
        let capacity = plan.segmentCapacity
        if n == 0 || capacity == 0 { return }
        let common = plan.kernelArguments
        let kernel = LoRAShrinkKernel.choose(
            .init(rows: n, capacity: capacity, maxSegmentLength: plan.maxSegmentLength, maxRank: maxRank, k: k, outIsF32: out.dtype == .f32,
                  isAligned16: (x.devicePointer | a.devicePointer) % 16 == 0),
            segmentsFrom: shrinkSegmentsFrom)
        let shape: [KernelArgument] = [.int(k), .int(maxRank), .int(stack)]
        switch kernel {
        case .general:
            launch(kernel.rawValue, grid: (n, stack, 1), block: 128,
                   [.pointer(x.devicePointer), .pointer(a.devicePointer), .pointer(out.devicePointer), .int(out.dtype == .f32 ? 1 : 0)]
                   + common + [.int(capacity)] + shape)
        case .segments, .segments8:
            if !plan.outputsZeroed { zero(out) }
            launch(kernel.rawValue, grid: (3 * multiprocessorCount, 1, 1), block: 256, sharedBytes: (capacity + 1) * 4,
                   [.pointer(x.devicePointer), .pointer(a.devicePointer), .pointer(out.devicePointer)] + common + shape + [.int(capacity)])
        case .mmaSmall, .mmaLarge:
            let large = kernel == .mmaLarge
            let rowsPerBlock = large ? 64 : 16, columnsPerBlock = large ? 32 : 16, warps = large ? 4 : 8
            let rowTiles = plan.compactRowTiles(rows: n, tileRows: rowsPerBlock)
            let columnTiles = (slotWidth + columnsPerBlock - 1) / columnsPerBlock
            let kSplit = shrinkSplit(rows: n, capacity: capacity, rowsPerBlock: rowsPerBlock, columnTiles: columnTiles, k: k, warps: warps)
            if kSplit > 1 && !plan.outputsZeroed { zero(out) }
            launch(kernel.rawValue, grid: (rowTiles, 1, columnTiles * kSplit), block: 32 * warps,
                   [.pointer(x.devicePointer), .pointer(a.devicePointer), .pointer(out.devicePointer)] + common + shape
                   + [.int(kSplit), .int(capacity)])
        }
    }

    public func loraExpand(_ shrunk: DeviceTensor, b: DeviceTensor, out: DeviceTensor, plan: LoRAKernelPlan, scalings: DeviceTensor, outOffsets: [Int]) {
        let stack = outOffsets.count - 1, totalOut = b.shape[1], maxRank = b.shape[2], n = shrunk.shape[0]
        bf16(b, "loraExpand"); bf16(out, "loraExpand"); i32(plan.permutation, "loraExpand")
        precondition((1...4).contains(stack) && outOffsets.first == 0 && outOffsets.last == totalOut && out.shape.rowCount == totalOut
                     && shrunk.shape.rowCount == stack * maxRank, "loraExpand: shrunk \(shrunk.shape), B \(b.shape), out \(out.shape)")
        precondition((shrunk.dtype == .f32 || shrunk.dtype == .bf16) && (scalings.dtype == .f32 || scalings.dtype == .bf16))
        let capacity = plan.segmentCapacity
        if n == 0 || capacity == 0 { return }
        let o = outOffsets + [totalOut, totalOut, totalOut]
        let common: [KernelArgument] = [.pointer(scalings.devicePointer), .int(scalings.dtype == .f32 ? 1 : 0)] + plan.kernelArguments
        let kernel = LoRAExpandKernel.choose(
            .init(rows: n, capacity: capacity, maxSegmentLength: plan.maxSegmentLength, maxRank: maxRank, totalOut: totalOut,
                  outOffsets: outOffsets, shrunkIsF32: shrunk.dtype == .f32,
                  isAligned16: (b.devicePointer | shrunk.devicePointer) % 16 == 0, isOutAligned4: out.devicePointer % 4 == 0),
            stream: usesExpandStream, segments: usesExpandSegments)
        let operands: [KernelArgument] = [.pointer(shrunk.devicePointer), .pointer(b.devicePointer), .pointer(out.devicePointer)] + common
        let shape: [KernelArgument] = [.int(totalOut), .int(maxRank), .int(stack), .int(o[1]), .int(o[2]), .int(o[3])]
        switch kernel {
        case .general:
            launch(kernel.rawValue, grid: (n, (totalOut + 127) / 128, 1), block: 128,
                   [.pointer(shrunk.devicePointer), .int(shrunk.dtype == .f32 ? 1 : 0), .pointer(b.devicePointer), .pointer(out.devicePointer)]
                   + common + [.int(capacity)] + shape)
        case .segments:
            launch(kernel.rawValue, grid: (totalOut / 128, (capacity + 7) / 8, 1), block: 128, operands + shape + [.int(capacity)])
        case .mmaSmall, .mmaLarge, .stream:
            let rowsPerBlock = kernel == .mmaLarge ? 64 : 16
            let rowTiles = (plan.maxSegmentLength + rowsPerBlock - 1) / rowsPerBlock
            // Enough blocks for eight per multiprocessor, each a stretch of columns (a multiple of
            // 128: four warps of 32); a prefill's few row tiles get long stretches.
            let working = (n + rowsPerBlock - 1) / rowsPerBlock + min(capacity, 8)
            let groups128 = (totalOut + 127) / 128
            let columnBlocks = max(1, min(groups128, (8 * multiprocessorCount + working - 1) / working))
            let columnsPerBlock = (groups128 + columnBlocks - 1) / columnBlocks * 128
            launch(kernel.rawValue, grid: (capacity, rowTiles, (totalOut + columnsPerBlock - 1) / columnsPerBlock), block: 128,
                   operands + shape + [.int(columnsPerBlock)])
        }
    }
}

extension CUDABackend {
    public func loraShrinkFused(_ out: DeviceTensor, a: DeviceTensor, scalings: DeviceTensor, plan: LoRAKernelPlan, stack: Int,
                                scratch: DeviceTensor, moduleStride: Int) {
        let op = "loraShrinkFused", n = out.shape[0], k = a.shape[2], slots = a.shape[0], slotWidth = a.shape[1], outStride = out.shape.rowCount
        bf16(a, op); bf16(out, op); i32(plan.permutation, op)
        // The plan's adapted slots must fit in out's columns (a step may cut them after its last one);
        // split (moduleStride > 0), each module's copy of the input holds R columns a slot.
        precondition(slotWidth % stack == 0 && outStride >= k + (moduleStride > 0 ? slotWidth / stack : slotWidth)
                     && moduleStride % 8 == 0 && (moduleStride == 0 || moduleStride >= out.count)
                     && scalings.dtype == .f32 && scalings.count >= slots * stack && scratch.dtype == .f32 && scratch.count >= n * slotWidth,
                     "\(op): A \(a.shape), out \(out.shape), scratch \(scratch.shape)")
        precondition(k % 8 == 0 && outStride % 8 == 0 && (out.devicePointer | a.devicePointer) % 16 == 0,
                     "\(op): needs rows of a multiple of 8 elements, 16-byte aligned (out \(out.shape))")
        let capacity = plan.segmentCapacity
        if n == 0 || capacity == 0 { return }
        let long = LoRAKernelPlan.usesLargeTiles(rows: n, capacity: capacity, maxSegmentLength: plan.maxSegmentLength)
        // Long segments of wide slots (64 columns or more) or of 256 rows or more on average, where the
        // pool's rank is a multiple of 8 (each module's columns whole 16-byte pieces), dense:
        // x · Aᵀ for every slot in out's columns by one cuBLASLt GEMM, then each row keeps its own
        // slot's columns, scaled, and zeroes the rest. Columns of slots below the plan's first adapted
        // one are skipped (zero). Narrower slots over shorter segments keep the kernels, which
        // multiply only each row's own slot.
        let extensionWidth = outStride - k
        let dense = long && fusedShrinkLong != .kernels && moduleStride == 0 && (slotWidth / stack) % 8 == 0 && (slotWidth >= 64 || n >= 256 * max(plan.numSegments, 1))
        if dense && extensionWidth % slotWidth == 0 && extensionWidth <= slots * slotWidth {
            let first = min(plan.firstAdaptedSlot, extensionWidth / slotWidth) * slotWidth, m = extensionWidth - first
            if m == 0 { return }
            blasMatmul(out, a.reshaped(Shape(slots * slotWidth, k)).rows(first, m), out, n: n, m: m, k: k,
                       ldInput: outStride, outColumn: k + first, label: "cublasLt fused shrink \(n)x\(m)x\(k)")
            launch("loom_lora_shrink_fused_mask", grid: (capacity, (plan.maxSegmentLength + 15) / 16, 1), block: 256,
                   plan.kernelArguments + [.int(k), .int(slotWidth / stack), .int(stack), .int(first), .int(extensionWidth),
                                           .pointer(out.devicePointer), .int(outStride), .pointer(scalings.devicePointer)])
            return
        }
        // loraShrink's tiles: 64 rows × 32 columns and 4 warps for long segments (prefill) of slots
        // 64 columns wide or more, else 16 rows × 16 columns and 8 warps. On the H200 at prefill
        // (2048 rows, 4 adapters, `bench lora-kernels`) the large tiles took rank 64 from 240 to
        // 203 µs a layer, and rank 16 from 87 to 182 with a deeper K split: a slot of 16 to 48
        // columns is one to three 16-column tiles, whose blocks take the whole K, where the large
        // tiles split K over blocks that add their sums atomically.
        let large = fusedShrinkLargeTiles && slotWidth >= 64 && long
        let (rowsPerBlock, columnsPerBlock, warps) = large ? (64, 32, 4) : (16, 16, 8)
        let rowTiles = plan.compactRowTiles(rows: n, tileRows: rowsPerBlock), columnTiles = (slotWidth + columnsPerBlock - 1) / columnsPerBlock
        // A K split needs a ticket per tile; past the tickets, each block takes the whole K.
        let tiles = rowTiles * columnTiles
        let deep = !large && fusedShrinkDeepRows > 0 && n >= fusedShrinkDeepRows
        let kSplit = tiles > Self.loraTicketCount ? 1
            : shrinkSplit(rows: n, capacity: capacity, rowsPerBlock: rowsPerBlock, columnTiles: columnTiles, k: k, warps: warps, deep: deep)
        let kernel = (large ? "loom_lora_shrink_fused_large" : deep ? "loom_lora_shrink_fused_deep" : "loom_lora_shrink_fused")
            + (moduleStride > 0 ? "_split" : "")
        launch(kernel, grid: (rowTiles, 1, columnTiles * kSplit), block: 32 * warps,
               [.pointer(a.devicePointer), .pointer(scratch.devicePointer)] + plan.kernelArguments + [
                .int(k), .int(slotWidth / stack), .int(stack), .int(kSplit), .pointer(out.devicePointer), .int(outStride),
                .pointer(scalings.devicePointer), .pointer(loraTickets.pointer), .int(capacity)]
                + (moduleStride > 0 ? [.u64(UInt64(moduleStride))] : []))
    }

    public var runsBatchedShrinks: Bool { fusedShrinkLong == .batched }

    public func deviceAddress(of tensor: DeviceTensor) -> UInt64? { tensor.devicePointer }

    /// Runs the batched shrink unless the dense GEMM over a narrow extension (under 128 columns) and a
    /// long K costs less: on the H200 (2048 rows over 4 adapters, `bench lora-kernels` eager µs) down's
    /// shrink at rank 16 took 33 batched against 24 + 5 for the dense GEMM and its mask; every other
    /// group there, and every group at rank 64, was faster batched (q/k/v 15 against 25 + 8 at rank 64).
    public func loraShrinkBatched(_ shrink: LoRABatchedShrink) -> Bool {
        guard runsBatchedShrinks, shrink.k < 8192 || shrink.rowStride - shrink.k >= 128 else { return false }
        precondition(shrink.pointers.dtype == .i32 && shrink.pointers.count >= 6 * shrink.instances
                     && shrink.calls.allSatisfy { $0.first >= 0 && $0.count > 0 && $0.first + $0.count <= shrink.instances },
                     "loraShrinkBatched: \(shrink.instances) instances, pointers \(shrink.pointers.shape)")
        guard beginLaunch() else { return true }
        activate()
        let base = shrink.pointers.devicePointer, arrayBytes = UInt64(8 * shrink.instances)
        for call in shrink.calls {
            let label = "cublasLt batched shrink \(call.count)x\(shrink.rows)x\(call.columns)x\(shrink.k)"
            let probe = profiler?.begin(label, stream: stream)
            let first = UInt64(8 * call.first)
            do {
                try blas.matmulPointers(weights: base + first, inputs: base + arrayBytes + first, outputs: base + 2 * arrayBytes + first,
                                        batch: call.count, n: shrink.rows, m: call.columns, k: shrink.k, ldWeight: shrink.k,
                                        ldInput: shrink.rowStride, ldOutput: shrink.rowStride, alpha: call.scaling,
                                        workspace: blasWorkspace.pointer, stream: stream)
            } catch {
                fail(error)
            }
            if let probe { profiler!.end(probe, stream: stream) }
        }
        return true
    }

    public func copyColumns(_ x: DeviceTensor, into copies: DeviceTensor, column: Int) {
        let (out, count, copyStride) = copies.outputCopies
        let n = x.shape[0], e = x.dtype.byteCount, width = x.shape.rowCount, stride = out.shape.rowCount
        precondition(x.dtype == out.dtype && out.shape[0] >= n && column >= 0 && column + width <= stride,
                     "copyColumns: \(x.shape) into \(copies.shape) at column \(column)")
        guard n > 0, beginLaunch() else { return }
        activate()
        for c in 0..<count {
            must(driver.memcpy2DAsync(from: .device(x.devicePointer), sourcePitch: width * e,
                                      toDevice: out.devicePointer + UInt64((c * copyStride + column) * e),
                                      destinationPitch: stride * e, widthBytes: width * e, height: n, stream: stream),
                 "cuMemcpy2DAsync(device → device, \(width * e) B × \(n))")
        }
    }
}

extension CUDABackend {
    /// The K split of a tensor-core shrink: blocks with work are about one per row tile of the
    /// batch and column tile; split K until `shrinkBlocksPerSM` per multiprocessor have work,
    /// keeping at least two 32-element blocks per warp.
    func shrinkSplit(rows n: Int, capacity: Int, rowsPerBlock: Int, columnTiles: Int, k: Int, warps: Int, deep: Bool = false) -> Int {
        let working = ((n + rowsPerBlock - 1) / rowsPerBlock + min(capacity, 8)) * columnTiles
        let target = shrinkBlocksPerSM(rowsPerBlock: rowsPerBlock, deep: deep) * multiprocessorCount
        return max(1, min((target + working - 1) / working, k / (64 * warps)))
    }
}

extension LoRAKernelPlan {
    /// The plan's device arrays as every LoRA kernel takes them: permutation, segment starts,
    /// segment slots, slot ranks.
    var kernelArguments: [KernelArgument] {
        [.pointer(permutation.devicePointer), .pointer(segmentStarts.devicePointer), .pointer(segmentSlots.devicePointer),
         .pointer(slotRanks.devicePointer)]
    }

    /// The row tiles of `tileRows` rows a shrink launch for this plan's `rows` takes, compact
    /// (`find_row_tile` in lora_shrink.cu: tiles of the segments in order, none for the empty ends of
    /// short segments): a segment of l rows has ⌈l / tileRows⌉, so `rows` in at most `segmentCapacity`
    /// segments have at most ⌈rows / tileRows⌉ + capacity − 1, and no segment has more than its
    /// bound's share. Depends only on the capacities and the row count (graph-safe). A graph decode
    /// step of 256 rows over 8 slots bounded at 256 rows a segment launches 23 row tiles of 16, not 128.
    func compactRowTiles(rows: Int, tileRows: Int) -> Int {
        Self.compactRowTiles(rows: rows, capacity: segmentCapacity, maxSegmentLength: maxSegmentLength, tileRows: tileRows)
    }

    static func compactRowTiles(rows: Int, capacity: Int, maxSegmentLength: Int, tileRows: Int) -> Int {
        max(1, min(capacity * ((maxSegmentLength + tileRows - 1) / tileRows), (rows + tileRows - 1) / tileRows + capacity - 1))
    }

    /// Whether the tensor-core kernels take 64-row tiles: when segments may be long and average
    /// more than 16 rows (prefill; sgmv with few adapters per row). Decode batches spread over
    /// adapters keep 16-row tiles. Depends only on the row count and capacities (graph-safe).
    static func usesLargeTiles(rows: Int, capacity: Int, maxSegmentLength: Int) -> Bool {
        maxSegmentLength > 16 && rows > 16 * max(capacity, 1)
    }
}
