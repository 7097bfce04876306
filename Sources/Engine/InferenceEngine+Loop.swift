import Foundation
import LoomCore
import LoRA
import Models

extension InferenceEngine {
    /// The loop: take new work, schedule, run one step, send tokens; sleep when idle.
    func run() {
        while true {
            condition.lock()
            while inbox.isEmpty && abortRequests.isEmpty && removedAdapterKeys.isEmpty && !flushRequested
                    && !scheduler.hasWork && !isStopped {
                condition.wait()
            }
            let newRequests = inbox, aborts = abortRequests, removed = removedAdapterKeys
            let flush = flushRequested, stopped = isStopped
            inbox.removeAll()
            abortRequests.removeAll()
            removedAdapterKeys.removeAll()
            flushRequested = false
            condition.unlock()

            for (request, continuation) in newRequests { admit(request, continuation) }
            for id in aborts {
                if let sid = sequenceByRequest[id], let seq = scheduler.abort(sid) { close(seq) }
            }
            for key in removed { _ = scheduler.removeCachedBlocks(adapterKey: key) }
            if flush { _ = scheduler.flushCache() }
            if stopped {
                for sid in Array(streams.keys) {
                    if let seq = scheduler.abort(sid, message: "The server is shutting down.") { close(seq) }
                }
                publishStats()
                condition.withLock { thread = nil }
                return
            }
            if scheduler.hasWork { step() }
            publishStats()
        }
    }

    private func admit(_ request: EngineRequest, _ continuation: AsyncThrowingStream<EngineEvent, Error>.Continuation) {
        let id = nextSequenceID
        nextSequenceID += 1
        let sequence = Sequence(id: id, promptIds: request.promptIds, params: request.params, adapterKey: request.adapter?.uid ?? 0,
                                adapterName: request.adapter?.name, arrivalTime: Date().timeIntervalSince1970)
        do {
            try scheduler.add(sequence)
        } catch {
            if let ref = request.adapter { lora?.registry.release(ref.uid) }
            continuation.finish(throwing: error)
            return
        }
        if let ref = request.adapter { refs[ref.uid] = ref }
        streams[id] = RequestStream(request: request, tokenizer: tokenizer, continuation: continuation)
        sequenceByRequest[request.id] = id
    }

    /// One scheduled step: forward, sample, detokenize, stream.
    private func step() {
        let clock = ContinuousClock()
        var mark = clock.now
        var phases = StepSeconds()
        /// The seconds since the last lap.
        func lap() -> Double {
            let now = clock.now
            defer { mark = now }
            return (now - mark).seconds
        }
        let decision = scheduler.schedule()
        for seq in decision.finished { close(seq) }
        guard !decision.isEmpty else {
            // Waiting work that cannot be admitted yet and nothing running: yield briefly.
            if scheduler.numRunning == 0 { Thread.sleep(forTimeInterval: 0.001) }
            return
        }
        var batch = scheduler.forwardBatch(for: decision)
        var rowAdapterKeys = decision.rowAdapterKeys
        // A decode step small enough for a graph is padded to its bucket with dummy sequences.
        let graphBatchSize = decodeGraphs.batchSize(for: decision)
        if let size = graphBatchSize {
            let padding = size - decision.items.count
            batch.appendPadding(count: padding)
            rowAdapterKeys += repeatElement(DecodeGraphs.paddingAdapterKey(rowAdapterKeys: rowAdapterKeys), count: padding)
        }
        phases.schedule = lap()
        let applier: LoRAApplier?
        do {
            applier = try lora?.prepare(rowAdapters: rowAdapterKeys.map { $0 == 0 ? nil : refs[$0] }, forGraph: graphBatchSize != nil)
        } catch {
            // An adapter could not be made resident (its files vanished since it was loaded):
            // fail that step's adapter requests, keep serving the rest from the next step on.
            for item in decision.items where item.adapterKey != 0 {
                if let seq = scheduler.abort(item.sequenceID, message: "LoRA adapter could not be loaded: \(error)") { close(seq) }
            }
            return
        }
        phases.prepare = lap()
        let (logits, replayedGraph) = forward(batch, lora: applier, graphKey: graphBatchSize.map { DecodeGraphs.key(batchSize: $0, hasLoRA: applier != nil) })
        phases.launch = lap()
        // Only the scheduled items' rows: padding rows come after them.
        let rows = decision.items.count { $0.wantsLogits }
        let vocab = model.config.vocabSize
        // Greedy rows without penalties or logprobs take the argmax on the device: only their ids
        // come back, not rows × vocabulary floats.
        let argmaxOnDevice = decision.items.allSatisfy { item in
            guard item.wantsLogits, let stream = streams[item.sequenceID], let seq = scheduler[item.sequenceID] else { return true }
            return sampler.isPlainArgmax(seq, returnLogprob: stream.request.returnLogprob, topLogprobsNum: stream.request.topLogprobsNum)
        }
        var deviceTokens: [Float] = []
        var host: [Float] = []
        if argmaxOnDevice {
            model.backend.argmax(logits.rows(rows), out: sampledIDs.rows(rows))
            deviceTokens = model.backend.download(sampledIDs.rows(rows))
        } else {
            host = model.backend.download(logits.rows(rows))
        }
        phases.wait = lap()
        var row = 0
        host.withUnsafeBufferPointer { all in
            for item in decision.items where item.wantsLogits {
                defer { row += 1 }
                guard let request = streams[item.sequenceID]?.request else { continue }
                let sampled: SampledToken
                if argmaxOnDevice {
                    sampled = SampledToken(token: Int(deviceTokens[row]))
                } else {
                    let slice = UnsafeBufferPointer(rebasing: all[(row * vocab)..<((row + 1) * vocab)])
                    sampled = scheduler.sample(sampler, logits: slice, for: item.sequenceID,
                                               returnLogprob: request.returnLogprob, topLogprobsNum: request.topLogprobsNum)
                }
                var finished = scheduler.record(token: sampled.token, for: item.sequenceID)
                // Pushed in place: a copy taken out of the dictionary would copy the decoder's ids
                // (the whole sequence) on every token.
                if let stop = streams[item.sequenceID]!.push(sampled), finished == nil {
                    finished = scheduler.finish(item.sequenceID, reason: .stopString(stop))
                }
                if let finished { close(finished) }
            }
        }
        condition.withLock { pendingGenerated += row }
        phases.output = lap()
        scheduler.stepTotals.record(phases, replayedGraph: replayedGraph)
    }

    /// The model's step, from the graph of `graphKey` when the engine has a graph runner and the key
    /// already ran once eagerly; each tensor-parallel rank captures and replays its own graph.
    /// Returns the logits and whether they came from a graph.
    private func forward(_ batch: ForwardBatch, lora applier: LoRAApplier?, graphKey: String?) -> (DeviceTensor, Bool) {
        guard let key = graphKey, let runner = options.graphRunner, decodeGraphs.shouldUseGraph(key) else {
            return (model.forward(batch, cache: cache, lora: applier), false)
        }
        let logits = model.forward(batch, cache: cache, lora: applier, around: { rank, body in
            var logits: DeviceTensor?
            runner(rank, key) { logits = body() }
            return logits!
        })
        return (logits, true)
    }

    /// Ends a finished sequence's stream and releases its adapter.
    func close(_ seq: Sequence) {
        guard var stream = streams.removeValue(forKey: seq.id) else { return }
        sequenceByRequest[stream.request.id] = nil
        let info = FinishInfo(reason: seq.finishReason ?? .abort("unknown"), promptTokens: seq.promptIds.count,
                              completionTokens: seq.outputIds.count, cachedTokens: seq.numCachedTokens)
        stream.finish(info)
        if let ref = stream.request.adapter {
            lora?.registry.release(ref.uid)
            if !streams.values.contains(where: { $0.request.adapter?.uid == ref.uid }) { refs[ref.uid] = nil }
        }
    }

    func currentStats() -> EngineStats {
        var s = EngineStats()
        s.running = scheduler.numRunning
        s.waiting = scheduler.numWaiting
        s.totalBlocks = scheduler.config.numBlocks
        s.freeBlocks = scheduler.numFreeBlocks
        s.cachedBlocks = scheduler.numEvictableBlocks
        s.blockSize = scheduler.config.blockSize
        for load in scheduler.adapterLoads {
            let name = load.adapterName ?? ""
            if load.numRunning > 0 { s.runningByAdapter[name, default: 0] += load.numRunning }
            if load.numWaiting > 0 { s.waitingByAdapter[name, default: 0] += load.numWaiting }
        }
        s.slotOccupants = lora?.slotOccupants ?? []
        s.steps = scheduler.numSteps
        s.stepTotals = scheduler.stepTotals
        return s
    }

    func publishStats() {
        let s = currentStats()
        condition.withLock {
            let generated = snapshot.generatedTokens + pendingGenerated
            pendingGenerated = 0
            snapshot = s
            snapshot.generatedTokens = generated
        }
    }
}
