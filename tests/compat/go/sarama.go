package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// Scenarios with IBM/sarama. sarama picks request versions from Config.Version rather than from
// the broker's ApiVersions answer, so the scenarios set the newest Kafka version it knows
// (4.x): the versions a current sarama user configures.

func init() {
	register("sarama_produce_consume", saramaProduceConsume)
	register("sarama_acks", saramaAcks)
	register("sarama_group", saramaGroup)
	register("sarama_admin", saramaAdmin)
}

var saramaCodecs = map[string]sarama.CompressionCodec{
	"none": sarama.CompressionNone, "gzip": sarama.CompressionGZIP, "snappy": sarama.CompressionSnappy,
	"lz4": sarama.CompressionLZ4, "zstd": sarama.CompressionZSTD,
}

func saramaConfig(c *Ctx) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V4_0_0_0
	cfg.ClientID = c.Name("client")
	cfg.Net.DialTimeout = 10 * time.Second
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	cfg.Producer.Return.Successes = true
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	// the broker's group.min.session.timeout.ms is 6000; short heartbeats make rebalances quick
	cfg.Consumer.Group.Session.Timeout = 6 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	return cfg
}

func saramaAdminClient(c *Ctx) (sarama.ClusterAdmin, error) {
	return sarama.NewClusterAdmin([]string{c.Bootstrap}, saramaConfig(c))
}

func saramaCreateTopic(c *Ctx, topic string, partitions int32) error {
	admin, err := saramaAdminClient(c)
	if err != nil {
		return err
	}
	defer admin.Close()
	return admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false)
}

func saramaMessage(topic string, partition int32, i int) *sarama.ProducerMessage {
	r := MakeRecord(i)
	m := &sarama.ProducerMessage{Topic: topic, Partition: partition}
	// a nil Encoder is a null key or value; ByteEncoder{} an empty one
	if r.Key != nil {
		m.Key = sarama.ByteEncoder(r.Key)
	}
	if r.Value != nil {
		m.Value = sarama.ByteEncoder(r.Value)
	}
	for _, h := range r.Headers {
		m.Headers = append(m.Headers, sarama.RecordHeader{Key: h[0], Value: h[1]})
	}
	return m
}

func saramaSent(m *sarama.ProducerMessage, r TestRecord) result {
	headers := [][]any{}
	for _, h := range r.Headers {
		headers = append(headers, Header(string(h[0]), h[1]))
	}
	return Report(m.Partition, m.Offset, m.Timestamp, r.Key, r.Value, headers)
}

func saramaRead(m *sarama.ConsumerMessage) result {
	headers := [][]any{}
	for _, h := range m.Headers {
		headers = append(headers, Header(string(h.Key), h.Value))
	}
	return Report(m.Partition, m.Offset, m.Timestamp, m.Key, m.Value, headers)
}

// saramaSendAll sends records from..from+n-1 to `partition` in turn (a manual partitioner) and
// reports where each went.
func saramaSendAll(p sarama.SyncProducer, topic string, partitions int32, from, n int) ([]any, error) {
	msgs := make([]*sarama.ProducerMessage, 0, n)
	recs := make([]TestRecord, 0, n)
	for i := from; i < from+n; i++ {
		msgs = append(msgs, saramaMessage(topic, int32(i)%partitions, i))
		recs = append(recs, MakeRecord(i))
	}
	if err := p.SendMessages(msgs); err != nil {
		return nil, err
	}
	out := make([]any, 0, n)
	for i, m := range msgs {
		out = append(out, saramaSent(m, recs[i]))
	}
	return out, nil
}

// saramaReadAll reads every partition of `topic` from the oldest offset with the partition
// consumer until `want` records arrived.
func saramaReadAll(c *Ctx, topic string, partitions int32, want int) ([]any, error) {
	consumer, err := sarama.NewConsumer([]string{c.Bootstrap}, saramaConfig(c))
	if err != nil {
		return nil, err
	}
	defer consumer.Close()
	var mu sync.Mutex
	out := []any{}
	pcs := []sarama.PartitionConsumer{}
	for p := int32(0); p < partitions; p++ {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			return nil, err
		}
		pcs = append(pcs, pc)
		go func(pc sarama.PartitionConsumer) {
			for m := range pc.Messages() {
				mu.Lock()
				out = append(out, saramaRead(m))
				mu.Unlock()
			}
		}(pc)
	}
	WaitFor(c.Context, 30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(out) >= want })
	for _, pc := range pcs {
		pc.AsyncClose()
	}
	mu.Lock()
	defer mu.Unlock()
	return append([]any{}, out...), nil
}

// Every codec through an idempotent producer, read back by the partition consumer.
func saramaProduceConsume(c *Ctx) (result, error) {
	res := result{}
	for _, codec := range Codecs {
		topic := c.Name(codec)
		if err := saramaCreateTopic(c, topic, 3); err != nil {
			return nil, err
		}
		cfg := saramaConfig(c)
		cfg.Producer.Compression = saramaCodecs[codec]
		cfg.Producer.Idempotent = true
		cfg.Producer.RequiredAcks = sarama.WaitForAll
		cfg.Producer.Retry.Max = 5
		cfg.Net.MaxOpenRequests = 1
		cfg.Producer.Partitioner = sarama.NewManualPartitioner
		cfg.Producer.Flush.Frequency = 20 * time.Millisecond
		p, err := sarama.NewSyncProducer([]string{c.Bootstrap}, cfg)
		if err != nil {
			return nil, fmt.Errorf("%s producer: %w", codec, err)
		}
		sent, err := saramaSendAll(p, topic, 3, 0, 150)
		p.Close()
		if err != nil {
			return nil, fmt.Errorf("%s send: %w", codec, err)
		}
		read, err := saramaReadAll(c, topic, 3, len(sent))
		if err != nil {
			return nil, fmt.Errorf("%s read: %w", codec, err)
		}
		res[codec] = result{"topic": topic, "sent": sent, "read": read}
	}
	return res, nil
}

// acks=0 (NoResponse) and acks=1 (WaitForLocal) without idempotence.
func saramaAcks(c *Ctx) (result, error) {
	topic := c.Name("t")
	if err := saramaCreateTopic(c, topic, 1); err != nil {
		return nil, err
	}
	res := result{"topic": topic}
	from := 0
	for _, acks := range []struct {
		name string
		acks sarama.RequiredAcks
	}{{"acks_0", sarama.NoResponse}, {"acks_1", sarama.WaitForLocal}} {
		cfg := saramaConfig(c)
		cfg.Producer.RequiredAcks = acks.acks
		cfg.Producer.Partitioner = sarama.NewManualPartitioner
		p, err := sarama.NewSyncProducer([]string{c.Bootstrap}, cfg)
		if err != nil {
			return nil, err
		}
		sent, err := saramaSendAll(p, topic, 1, from, 40)
		p.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", acks.name, err)
		}
		res[acks.name] = sent
		from += 40
	}
	return res, nil
}

type saramaMember struct {
	name       string
	mu         sync.Mutex
	claims     map[string][]int32
	generation int32
	memberID   string
	setups     int
	records    int
	err        error
}

func (m *saramaMember) Setup(s sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claims = s.Claims()
	m.generation = s.GenerationID()
	m.memberID = s.MemberID()
	m.setups++
	return nil
}

func (m *saramaMember) Cleanup(s sarama.ConsumerGroupSession) error {
	// commit what was marked before giving the partitions up
	s.Commit()
	return nil
}

func (m *saramaMember) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		m.mu.Lock()
		m.records++
		m.mu.Unlock()
		s.MarkMessage(msg, "")
	}
	return nil
}

func (m *saramaMember) partitions() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int32
	for _, ps := range m.claims {
		out = append(out, ps...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (m *saramaMember) snapshot() result {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []int32
	for _, p := range m.claims {
		ps = append(ps, p...)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	if ps == nil {
		ps = []int32{}
	}
	return result{"name": m.name, "partitions": ps, "generation": m.generation, "member_id": m.memberID,
		"records": m.records, "error": ErrName(m.err)}
}

// startSaramaMember runs one group member until its context is cancelled.
func startSaramaMember(c *Ctx, name, group, topic string, strategy sarama.BalanceStrategy) (*saramaMember, context.CancelFunc, <-chan struct{}, error) {
	cfg := saramaConfig(c)
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{strategy}
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	g, err := sarama.NewConsumerGroup([]string{c.Bootstrap}, group, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	m := &saramaMember{name: name}
	ctx, cancel := context.WithCancel(c.Context)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer g.Close()
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, m); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
				m.mu.Lock()
				m.err = err
				m.mu.Unlock()
				return
			}
		}
	}()
	return m, cancel, done, nil
}

func covered(n int, members ...*saramaMember) bool {
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

// Two members with the range strategy: a alone, a and b, a alone again after b leaves; offsets
// committed by the members, read back by the admin client.
func saramaGroup(c *Ctx) (result, error) {
	topic, group := c.Name("t"), c.Name("g")
	if err := saramaCreateTopic(c, topic, 4); err != nil {
		return nil, err
	}
	cfg := saramaConfig(c)
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer([]string{c.Bootstrap}, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := saramaSendAll(p, topic, 4, 0, 40); err != nil {
		return nil, err
	}
	p.Close()
	res := result{"topic": topic, "group": group}
	a, stopA, doneA, err := startSaramaMember(c, "a", group, topic, sarama.NewBalanceStrategyRange())
	if err != nil {
		return nil, err
	}
	defer func() { stopA(); <-doneA }()
	res["a_alone_reached"] = WaitFor(c.Context, 30*time.Second, func() bool { return covered(4, a) })
	res["a_alone"] = a.snapshot()
	b, stopB, doneB, err := startSaramaMember(c, "b", group, topic, sarama.NewBalanceStrategyRange())
	if err != nil {
		return nil, err
	}
	res["both_reached"] = WaitFor(c.Context, 30*time.Second, func() bool {
		return covered(4, a, b) && a.snapshot()["generation"] == b.snapshot()["generation"]
	})
	res["both"] = []any{a.snapshot(), b.snapshot()}
	// every record consumed by one member or the other, and committed by the members
	WaitFor(c.Context, 30*time.Second, func() bool {
		return a.snapshot()["records"].(int)+b.snapshot()["records"].(int) >= 40
	})
	stopB()
	<-doneB
	res["a_again_reached"] = WaitFor(c.Context, 30*time.Second, func() bool {
		return covered(4, a) && a.snapshot()["generation"].(int32) > res["both"].([]any)[0].(result)["generation"].(int32)
	})
	res["a_again"] = a.snapshot()
	stopA()
	<-doneA
	admin, err := saramaAdminClient(c)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	offsets, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1, 2, 3}})
	if err != nil {
		return nil, err
	}
	committed := result{}
	for p, block := range offsets.Blocks[topic] {
		committed[fmt.Sprint(p)] = block.Offset
	}
	res["committed"] = committed
	return res, nil
}

// The ClusterAdmin calls ringlog serves: topics, partitions, configs (both AlterConfigs and
// IncrementalAlterConfigs), records, offsets, groups, the cluster.
func saramaAdmin(c *Ctx) (result, error) {
	admin, err := saramaAdminClient(c)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	a, b := c.Name("a"), c.Name("b")
	res := result{"a": a, "b": b}
	retention := "3600000"
	if err := admin.CreateTopic(a, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"retention.ms": &retention}}, false); err != nil {
		return nil, err
	}
	if err := admin.CreateTopic(b, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
		return nil, err
	}
	res["create_existing"] = ErrName(admin.CreateTopic(a, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false))
	listed, err := admin.ListTopics()
	if err != nil {
		return nil, err
	}
	res["listed"] = result{"a_partitions": listed[a].NumPartitions, "a_replication": listed[a].ReplicationFactor,
		"a_retention": deref(listed[a].ConfigEntries["retention.ms"]), "has_b": hasKey(listed, b)}
	md, err := admin.DescribeTopics([]string{a})
	if err != nil {
		return nil, err
	}
	parts := []any{}
	for _, p := range md[0].Partitions {
		parts = append(parts, result{"partition": p.ID, "leader": p.Leader, "replicas": p.Replicas, "isr": p.Isr})
	}
	sort.Slice(parts, func(i, j int) bool {
		return parts[i].(result)["partition"].(int32) < parts[j].(result)["partition"].(int32)
	})
	res["described"] = result{"error": ErrName(errOrNil(md[0].Err)), "partitions": parts}
	if err := admin.CreatePartitions(a, 4, nil, false); err != nil {
		return nil, fmt.Errorf("create partitions: %w", err)
	}
	res["create_partitions_fewer"] = ErrName(admin.CreatePartitions(a, 1, nil, false))
	md, err = admin.DescribeTopics([]string{a})
	if err != nil {
		return nil, err
	}
	res["partitions_after"] = len(md[0].Partitions)

	// configs: legacy AlterConfigs replaces the overrides, IncrementalAlterConfigs edits them
	topicRes := sarama.ConfigResource{Type: sarama.TopicResource, Name: a}
	res["configs_initial"] = saramaConfigs(admin, topicRes)
	segment := "1048576"
	if err := admin.AlterConfig(sarama.TopicResource, a, map[string]*string{"segment.bytes": &segment}, false); err != nil {
		return nil, fmt.Errorf("alter config: %w", err)
	}
	res["configs_after_alter"] = saramaConfigs(admin, topicRes)
	maxBytes := "200000"
	if err := admin.IncrementalAlterConfig(sarama.TopicResource, a, map[string]sarama.IncrementalAlterConfigsEntry{
		"max.message.bytes": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &maxBytes},
		"segment.bytes":     {Operation: sarama.IncrementalAlterConfigsOperationDelete},
	}, false); err != nil {
		return nil, fmt.Errorf("incremental alter config: %w", err)
	}
	res["configs_after_incremental"] = saramaConfigs(admin, topicRes)
	bad := "-5"
	res["alter_invalid"] = ErrName(admin.AlterConfig(sarama.TopicResource, a, map[string]*string{"segment.bytes": &bad}, false))
	brokerEntries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.BrokerResource, Name: "0"})
	res["broker_configs"] = result{"count": len(brokerEntries), "error": ErrName(err)}

	// records and offsets
	cfg := saramaConfig(c)
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer([]string{c.Bootstrap}, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := saramaSendAll(p, a, 1, 0, 30); err != nil {
		return nil, err
	}
	p.Close()
	if err := admin.DeleteRecords(a, map[int32]int64{0: 10}); err != nil {
		return nil, fmt.Errorf("delete records: %w", err)
	}
	res["delete_records_beyond_end"] = ErrName(admin.DeleteRecords(a, map[int32]int64{1: 5}))
	listOffsets, err := admin.ListOffsets(map[string]map[int32]int64{a: {0: sarama.OffsetOldest, 1: sarama.OffsetNewest}}, nil)
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	res["list_offsets"] = result{"0_oldest": listOffsets[a][0].Offset, "1_newest": listOffsets[a][1].Offset}
	client, err := sarama.NewClient([]string{c.Bootstrap}, saramaConfig(c))
	if err != nil {
		return nil, err
	}
	newest, err := client.GetOffset(a, 0, sarama.OffsetNewest)
	client.Close()
	if err != nil {
		return nil, err
	}
	res["newest_0"] = newest

	// groups: offsets committed by the admin client for an empty group, then listed and deleted
	group := c.Name("g")
	_, err = admin.AlterConsumerGroupOffsets(group, map[string]map[int32]sarama.OffsetAndMetadata{a: {0: {Offset: 15, Metadata: "m"}, 1: {Offset: 0}}}, nil)
	if err != nil {
		return nil, fmt.Errorf("alter group offsets: %w", err)
	}
	groups, err := admin.ListConsumerGroups()
	if err != nil {
		return nil, err
	}
	res["group_listed"] = groups[group]
	descs, err := admin.DescribeConsumerGroups([]string{group})
	if err != nil {
		return nil, err
	}
	res["group_described"] = result{"state": descs[0].State, "protocol_type": descs[0].ProtocolType,
		"members": len(descs[0].Members), "error": ErrName(errOrNil(descs[0].Err))}
	res["group_offsets"] = saramaGroupOffsets(admin, group, a)
	if err := admin.DeleteConsumerGroupOffset(group, a, 1); err != nil {
		return nil, fmt.Errorf("delete group offset: %w", err)
	}
	res["group_offsets_after_delete"] = saramaGroupOffsets(admin, group, a)
	if err := admin.DeleteConsumerGroup(group); err != nil {
		return nil, fmt.Errorf("delete group: %w", err)
	}
	groups, _ = admin.ListConsumerGroups()
	res["group_listed_after_delete"] = hasKey(groups, group)

	brokers, controller, err := admin.DescribeCluster()
	if err != nil {
		return nil, err
	}
	nodes := []any{}
	for _, br := range brokers {
		nodes = append(nodes, result{"id": br.ID(), "addr": br.Addr()})
	}
	res["cluster"] = result{"controller": controller, "brokers": nodes}

	logDirs, err := admin.DescribeLogDirs([]int32{0})
	if err != nil {
		return nil, fmt.Errorf("describe log dirs: %w", err)
	}
	dirsOut := []any{}
	for _, d := range logDirs[0] {
		size := int64(-1)
		for _, t := range d.Topics {
			for _, p := range t.Partitions {
				if t.Topic == a && p.PartitionID == 0 {
					size = p.Size
				}
			}
		}
		dirsOut = append(dirsOut, result{"path": d.Path, "error": ErrName(errOrNil(d.ErrorCode)), "a0_size": size})
	}
	res["log_dirs"] = dirsOut

	if err := admin.DeleteTopic(b); err != nil {
		return nil, err
	}
	listed, err = admin.ListTopics()
	if err != nil {
		return nil, err
	}
	res["b_listed_after_delete"] = hasKey(listed, b)
	res["delete_unknown"] = ErrName(admin.DeleteTopic(c.Name("nope")))
	return res, nil
}

func saramaConfigs(admin sarama.ClusterAdmin, r sarama.ConfigResource) result {
	entries, err := admin.DescribeConfig(r)
	if err != nil {
		return result{"error": err.Error()}
	}
	out := result{}
	for _, e := range entries {
		out[e.Name] = result{"value": e.Value, "source": e.Source.String(), "default": e.Default}
	}
	return out
}

func saramaGroupOffsets(admin sarama.ClusterAdmin, group, topic string) result {
	offsets, err := admin.ListConsumerGroupOffsets(group, nil)
	if err != nil {
		return result{"error": err.Error()}
	}
	out := result{}
	for p, block := range offsets.Blocks[topic] {
		if block.Offset >= 0 {
			out[fmt.Sprint(p)] = result{"offset": block.Offset, "metadata": block.Metadata}
		}
	}
	return out
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}

func errOrNil(e sarama.KError) error {
	if e == sarama.ErrNoError {
		return nil
	}
	return e
}
