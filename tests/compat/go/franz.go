package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Scenarios with twmb/franz-go (kgo) and its admin package kadm. franz-go negotiates request
// versions from the broker's ApiVersions answer and is idempotent by default.

func init() {
	register("franz_produce_consume", franzProduceConsume)
	register("franz_acks", franzAcks)
	register("franz_group", franzGroup)
	register("franz_admin", franzAdmin)
}

var franzCodecs = map[string]kgo.CompressionCodec{
	"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
	"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
}

func franzClient(c *Ctx, opts ...kgo.Opt) (*kgo.Client, error) {
	base := []kgo.Opt{
		kgo.SeedBrokers(c.Bootstrap),
		kgo.ClientID(c.Name("client")),
		kgo.RetryTimeout(20 * time.Second),
		// the broker's group.min.session.timeout.ms is 6000; short heartbeats make rebalances quick
		kgo.SessionTimeout(6 * time.Second),
		kgo.HeartbeatInterval(300 * time.Millisecond),
	}
	return kgo.NewClient(append(base, opts...)...)
}

func franzAdminClient(c *Ctx) (*kadm.Client, *kgo.Client, error) {
	cl, err := franzClient(c)
	if err != nil {
		return nil, nil, err
	}
	return kadm.NewClient(cl), cl, nil
}

func franzCreateTopic(c *Ctx, topic string, partitions int32) error {
	adm, cl, err := franzAdminClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := adm.CreateTopic(c.Context, partitions, 1, nil, topic)
	if err != nil {
		return err
	}
	return resp.Err
}

func franzRecord(topic string, partition int32, i int) *kgo.Record {
	r := MakeRecord(i)
	rec := &kgo.Record{Topic: topic, Partition: partition, Key: r.Key, Value: r.Value}
	for _, h := range r.Headers {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: string(h[0]), Value: h[1]})
	}
	return rec
}

func franzReport(r *kgo.Record) result {
	headers := [][]any{}
	for _, h := range r.Headers {
		headers = append(headers, Header(h.Key, h.Value))
	}
	return Report(r.Partition, r.Offset, r.Timestamp, r.Key, r.Value, headers)
}

// franzSendAll produces records from..from+n-1, record i to partition i % partitions.
func franzSendAll(c *Ctx, cl *kgo.Client, topic string, partitions int32, from, n int) ([]any, error) {
	recs := make([]*kgo.Record, 0, n)
	for i := from; i < from+n; i++ {
		recs = append(recs, franzRecord(topic, int32(i)%partitions, i))
	}
	if err := cl.ProduceSync(c.Context, recs...).FirstErr(); err != nil {
		return nil, err
	}
	out := make([]any, 0, n)
	for _, r := range recs {
		out = append(out, franzReport(r))
	}
	return out, nil
}

// franzReadAll reads every partition of `topic` from the start, without a group.
func franzReadAll(c *Ctx, topic string, want int) ([]any, error) {
	cl, err := franzClient(c, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	out := []any{}
	ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
	defer cancel()
	for len(out) < want && ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		for _, e := range fetches.Errors() {
			if !errors.Is(e.Err, context.DeadlineExceeded) && !errors.Is(e.Err, context.Canceled) {
				return nil, fmt.Errorf("fetch %s/%d: %w", e.Topic, e.Partition, e.Err)
			}
		}
		fetches.EachRecord(func(r *kgo.Record) { out = append(out, franzReport(r)) })
	}
	return out, nil
}

// Every codec through franz-go's default (idempotent, acks=all) producer, read back.
func franzProduceConsume(c *Ctx) (result, error) {
	res := result{}
	for _, codec := range Codecs {
		topic := c.Name(codec)
		if err := franzCreateTopic(c, topic, 3); err != nil {
			return nil, err
		}
		cl, err := franzClient(c, kgo.ProducerBatchCompression(franzCodecs[codec]),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(20*time.Millisecond))
		if err != nil {
			return nil, err
		}
		sent, err := franzSendAll(c, cl, topic, 3, 0, 150)
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("%s send: %w", codec, err)
		}
		read, err := franzReadAll(c, topic, len(sent))
		if err != nil {
			return nil, fmt.Errorf("%s read: %w", codec, err)
		}
		res[codec] = result{"topic": topic, "sent": sent, "read": read}
	}
	return res, nil
}

// acks=0 and acks=1 need idempotence off.
func franzAcks(c *Ctx) (result, error) {
	topic := c.Name("t")
	if err := franzCreateTopic(c, topic, 1); err != nil {
		return nil, err
	}
	res := result{"topic": topic}
	from := 0
	for _, acks := range []struct {
		name string
		acks kgo.Acks
	}{{"acks_0", kgo.NoAck()}, {"acks_1", kgo.LeaderAck()}} {
		cl, err := franzClient(c, kgo.RequiredAcks(acks.acks), kgo.DisableIdempotentWrite(),
			kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			return nil, err
		}
		sent, err := franzSendAll(c, cl, topic, 1, from, 40)
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", acks.name, err)
		}
		res[acks.name] = sent
		from += 40
	}
	return res, nil
}

type franzMember struct {
	name    string
	mu      sync.Mutex
	owned   map[int32]bool
	events  []any
	records int
	client  *kgo.Client
	err     error
	stopped chan struct{}
	cancel  context.CancelFunc
}

func (m *franzMember) partitions() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []int32{}
	for p := range m.owned {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (m *franzMember) snapshot() result {
	ps := m.partitions()
	m.mu.Lock()
	defer m.mu.Unlock()
	return result{"name": m.name, "partitions": ps, "events": append([]any{}, m.events...), "records": m.records,
		"error": ErrName(m.err)}
}

func sortedParts(ps map[string][]int32, topic string) []int32 {
	out := append([]int32{}, ps[topic]...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// startFranzMember polls in its own goroutine, committing what it consumed after each poll.
func startFranzMember(c *Ctx, name, group, topic string, extra ...kgo.Opt) (*franzMember, error) {
	m := &franzMember{name: name, owned: map[int32]bool{}, stopped: make(chan struct{})}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()), kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range ps[topic] {
				m.owned[p] = true
			}
			m.events = append(m.events, result{"event": "assigned", "partitions": sortedParts(ps, topic)})
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, ps map[string][]int32) {
			// commit before giving partitions away, as a cooperative consumer should
			_ = cl.CommitUncommittedOffsets(ctx)
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range ps[topic] {
				delete(m.owned, p)
			}
			m.events = append(m.events, result{"event": "revoked", "partitions": sortedParts(ps, topic)})
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range ps[topic] {
				delete(m.owned, p)
			}
			m.events = append(m.events, result{"event": "lost", "partitions": sortedParts(ps, topic)})
		}),
	}
	cl, err := franzClient(c, append(opts, extra...)...)
	if err != nil {
		return nil, err
	}
	m.client = cl
	ctx, cancel := context.WithCancel(c.Context)
	m.cancel = cancel
	go func() {
		defer close(m.stopped)
		for ctx.Err() == nil {
			fetches := cl.PollFetches(ctx)
			n := fetches.NumRecords()
			if n > 0 {
				if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
					m.mu.Lock()
					m.err = err
					m.mu.Unlock()
				}
			}
			m.mu.Lock()
			m.records += n
			m.mu.Unlock()
		}
	}()
	return m, nil
}

// stop ends polling and leaves the group (Close sends LeaveGroup).
func (m *franzMember) stop() {
	m.cancel()
	<-m.stopped
	m.client.Close()
}

func franzCovered(n int, members ...*franzMember) bool {
	seen := map[int32]bool{}
	total := 0
	for _, m := range members {
		ps := m.partitions()
		if len(ps) == 0 {
			return false
		}
		total += len(ps)
		for _, p := range ps {
			seen[p] = true
		}
	}
	return len(seen) == n && total == n
}

// Two members with the cooperative-sticky balancer (franz-go's default), a third with a static
// instance id; offsets committed by the members and read back with kadm.
func franzGroup(c *Ctx) (result, error) {
	topic, group := c.Name("t"), c.Name("g")
	if err := franzCreateTopic(c, topic, 4); err != nil {
		return nil, err
	}
	cl, err := franzClient(c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return nil, err
	}
	if _, err := franzSendAll(c, cl, topic, 4, 0, 40); err != nil {
		return nil, err
	}
	cl.Close()
	res := result{"topic": topic, "group": group}
	a, err := startFranzMember(c, "a", group, topic)
	if err != nil {
		return nil, err
	}
	defer func() {
		select {
		case <-a.stopped:
		default:
			a.stop()
		}
	}()
	res["a_alone_reached"] = WaitFor(c.Context, 30*time.Second, func() bool { return franzCovered(4, a) })
	res["a_alone"] = a.snapshot()
	b, err := startFranzMember(c, "b", group, topic, kgo.InstanceID("static-b"))
	if err != nil {
		return nil, err
	}
	res["both_reached"] = WaitFor(c.Context, 30*time.Second, func() bool { return franzCovered(4, a, b) })
	res["both"] = []any{a.snapshot(), b.snapshot()}
	WaitFor(c.Context, 30*time.Second, func() bool {
		return a.snapshot()["records"].(int)+b.snapshot()["records"].(int) >= 40
	})
	adm, acl, err := franzAdminClient(c)
	if err != nil {
		return nil, err
	}
	defer acl.Close()
	described, err := adm.DescribeGroups(c.Context, group)
	if err != nil {
		return nil, err
	}
	d := described[group]
	members := []any{}
	for _, m := range d.Members {
		instance := ""
		if m.InstanceID != nil {
			instance = *m.InstanceID
		}
		members = append(members, result{"client_id": m.ClientID, "instance_id": instance})
	}
	res["described"] = result{"state": d.State, "protocol": d.Protocol, "protocol_type": d.ProtocolType,
		"members": members, "error": ErrName(d.Err)}
	b.stop()
	res["a_again_reached"] = WaitFor(c.Context, 30*time.Second, func() bool { return franzCovered(4, a) })
	res["a_again"] = a.snapshot()
	a.stop()
	offsets, err := adm.FetchOffsets(c.Context, group)
	if err != nil {
		return nil, err
	}
	committed := result{}
	offsets.Each(func(o kadm.OffsetResponse) { committed[fmt.Sprint(o.Partition)] = o.At })
	res["committed"] = committed
	return res, nil
}

// kadm: topics, partitions, configs (incremental and the legacy replace), records, offsets,
// groups, the cluster; and the APIs ringlog does not serve, with their errors.
func franzAdmin(c *Ctx) (result, error) {
	adm, cl, err := franzAdminClient(c)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx := c.Context
	a, b := c.Name("a"), c.Name("b")
	res := result{"a": a, "b": b}
	retention := "3600000"
	created, err := adm.CreateTopics(ctx, 2, 1, map[string]*string{"retention.ms": &retention}, a, b)
	if err != nil {
		return nil, err
	}
	createdOut := result{}
	for _, t := range created.Sorted() {
		createdOut[t.Topic] = result{"partitions": t.NumPartitions, "replication": t.ReplicationFactor,
			"id": t.ID.String(), "error": ErrName(t.Err)}
	}
	res["created"] = createdOut
	again, err := adm.CreateTopics(ctx, 1, 1, nil, a)
	if err != nil {
		return nil, err
	}
	res["create_existing"] = ErrName(again[a].Err)
	details, err := adm.ListTopics(ctx, a)
	if err != nil {
		return nil, err
	}
	parts := []any{}
	for _, p := range details[a].Partitions.Sorted() {
		parts = append(parts, result{"partition": p.Partition, "leader": p.Leader, "replicas": p.Replicas, "isr": p.ISR})
	}
	res["listed"] = result{"id": details[a].ID.String(), "partitions": parts}
	if _, err := adm.UpdatePartitions(ctx, 3, a); err != nil {
		return nil, err
	}
	fewer, err := adm.UpdatePartitions(ctx, 1, a)
	if err != nil {
		return nil, err
	}
	res["update_partitions_fewer"] = ErrName(fewer[a].Err)
	details, err = adm.ListTopics(ctx, a)
	if err != nil {
		return nil, err
	}
	res["partitions_after"] = len(details[a].Partitions)

	describe := func() result {
		rcs, err := adm.DescribeTopicConfigs(ctx, a)
		if err != nil {
			return result{"error": err.Error()}
		}
		out := result{}
		rc, _ := rcs.On(a, nil)
		for _, cfg := range rc.Configs {
			out[cfg.Key] = result{"value": cfg.MaybeValue(), "source": cfg.Source.String()}
		}
		return out
	}
	res["configs_initial"] = describe()
	segment := "1048576"
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "segment.bytes", Value: &segment}}, a); err != nil {
		return nil, err
	}
	res["configs_after_incremental"] = describe()
	maxBytes := "300000"
	// AlterConfigs (the legacy API) replaces every override: retention.ms and segment.bytes go
	if _, err := adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: &maxBytes}}, a); err != nil {
		return nil, err
	}
	res["configs_after_state"] = describe()
	brokerConfigs, err := adm.DescribeBrokerConfigs(ctx)
	if err == nil {
		n := 0
		for _, rc := range brokerConfigs {
			n += len(rc.Configs)
		}
		res["broker_config_count"] = n
	} else {
		res["broker_config_count"] = err.Error()
	}

	pcl, err := franzClient(c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return nil, err
	}
	if _, err := franzSendAll(c, pcl, a, 1, 0, 30); err != nil {
		return nil, err
	}
	pcl.Close()
	start, err := adm.ListStartOffsets(ctx, a)
	if err != nil {
		return nil, err
	}
	end, err := adm.ListEndOffsets(ctx, a)
	if err != nil {
		return nil, err
	}
	res["offsets_before_delete"] = result{"start_0": start[a][0].Offset, "end_0": end[a][0].Offset, "end_1": end[a][1].Offset}
	toDelete := kadm.Offsets{}
	toDelete.Add(kadm.Offset{Topic: a, Partition: 0, At: 12})
	deleted, err := adm.DeleteRecords(ctx, toDelete)
	if err != nil {
		return nil, err
	}
	dr, _ := deleted.On(a, 0, nil)
	res["delete_records"] = result{"low_watermark": dr.LowWatermark, "error": ErrName(dr.Err)}
	start, err = adm.ListStartOffsets(ctx, a)
	if err != nil {
		return nil, err
	}
	res["start_after_delete"] = start[a][0].Offset
	after, err := adm.ListOffsetsAfterMilli(ctx, time.Now().Add(time.Hour).UnixMilli(), a)
	if err != nil {
		return nil, err
	}
	res["offset_after_future_milli"] = after[a][0].Offset

	group := c.Name("g")
	commit := kadm.Offsets{}
	commit.Add(kadm.Offset{Topic: a, Partition: 0, At: 20, Metadata: "m"})
	commit.Add(kadm.Offset{Topic: a, Partition: 1, At: 0})
	committed, err := adm.CommitOffsets(ctx, group, commit)
	if err != nil {
		return nil, err
	}
	res["commit_error"] = ErrName(committed.Error())
	fetchOffsets := func() result {
		offs, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			return result{"error": err.Error()}
		}
		out := result{}
		offs.Each(func(o kadm.OffsetResponse) {
			out[fmt.Sprint(o.Partition)] = result{"offset": o.At, "metadata": o.Metadata}
		})
		return out
	}
	res["group_offsets"] = fetchOffsets()
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	if g, ok := listed[group]; ok {
		res["group_listed"] = result{"state": g.State, "protocol_type": g.ProtocolType}
	}
	ds := kadm.TopicsSet{}
	ds.Add(a, 1)
	if _, err := adm.DeleteOffsets(ctx, group, ds); err != nil {
		return nil, err
	}
	res["group_offsets_after_delete"] = fetchOffsets()
	dg, err := adm.DeleteGroups(ctx, group)
	if err != nil {
		return nil, err
	}
	res["delete_group_error"] = ErrName(dg[group].Err)
	listed, err = adm.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	_, res["group_listed_after_delete"] = listed[group]

	meta, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return nil, err
	}
	brokers := []any{}
	for _, br := range meta.Brokers {
		brokers = append(brokers, result{"id": br.NodeID, "host": br.Host, "port": br.Port})
	}
	res["cluster"] = result{"id": meta.Cluster, "controller": meta.Controller, "brokers": brokers}
	versions, err := adm.ApiVersions(ctx)
	if err != nil {
		return nil, err
	}
	keys := result{}
	versions.Each(func(v kadm.BrokerApiVersions) {
		v.EachKeySorted(func(key, min, max int16) { keys[fmt.Sprint(key)] = []int16{min, max} })
	})
	res["api_versions"] = keys

	// DescribeLogDirs and DescribeProducers (a's partition 0 was written idempotently above)
	dirs, err := adm.DescribeAllLogDirs(ctx, nil)
	if err != nil {
		return nil, err
	}
	dirsOut := []any{}
	for _, d := range dirs.Sorted() {
		size := int64(-1)
		if dp, ok := d.Topics[a][0]; ok {
			size = dp.Size
		}
		dirsOut = append(dirsOut, result{"broker": d.Broker, "dir": d.Dir, "error": ErrName(d.Err),
			"total_bytes": d.TotalBytes, "usable_bytes": d.UsableBytes, "a0_size": size})
	}
	res["log_dirs"] = dirsOut
	wanted := kadm.TopicsSet{}
	wanted.Add(a, 0, 1)
	described, err := adm.DescribeProducers(ctx, wanted)
	if err != nil {
		return nil, err
	}
	producersOut := result{}
	for _, part := range described[a].Partitions.Sorted() {
		ps := []any{}
		for _, p := range part.ActiveProducers.Sorted() {
			ps = append(ps, result{"producer_id": p.ProducerID, "epoch": p.ProducerEpoch, "last_sequence": p.LastSequence,
				"coordinator_epoch": p.CoordinatorEpoch, "txn_start_offset": p.CurrentTxnStartOffset})
		}
		producersOut[fmt.Sprint(part.Partition)] = result{"error": ErrName(part.Err), "producers": ps}
	}
	res["producers"] = producersOut

	deletedTopics, err := adm.DeleteTopics(ctx, b)
	if err != nil {
		return nil, err
	}
	res["delete_topic_error"] = ErrName(deletedTopics[b].Err)
	all, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, err
	}
	res["b_listed_after_delete"] = all.Has(b)
	return res, nil
}
