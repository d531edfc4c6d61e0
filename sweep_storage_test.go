package iadvize

import (
	"context"
	"errors"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// sweepStorage fails one storage operation, once: the n-th Get, Put, Delete or
// List after failOp(n) is called (counting from 1). The fault sweeps fail each
// operation of a request in turn.
type sweepStorage struct {
	logical.Storage
	mu      sync.Mutex
	countdn int  // operations left before the one to fail; 0: not armed
	hit     bool // the armed operation failed
}

var errSweep = errors.New("injected storage fault")

// failOp arms the n-th operation from now to fail.
func (s *sweepStorage) failOp(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.countdn, s.hit = n, false
}

// failed reports whether the armed operation came and failed; it disarms.
func (s *sweepStorage) failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	hit := s.hit
	s.countdn, s.hit = 0, false
	return hit
}

func (s *sweepStorage) fault() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.countdn == 0 {
		return nil
	}
	s.countdn--
	if s.countdn == 0 {
		s.hit = true
		return errSweep
	}
	return nil
}

func (s *sweepStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if err := s.fault(); err != nil {
		return nil, err
	}
	return s.Storage.Get(ctx, key)
}

func (s *sweepStorage) Put(ctx context.Context, entry *logical.StorageEntry) error {
	if err := s.fault(); err != nil {
		return err
	}
	return s.Storage.Put(ctx, entry)
}

func (s *sweepStorage) Delete(ctx context.Context, key string) error {
	if err := s.fault(); err != nil {
		return err
	}
	return s.Storage.Delete(ctx, key)
}

func (s *sweepStorage) List(ctx context.Context, prefix string) ([]string, error) {
	if err := s.fault(); err != nil {
		return nil, err
	}
	return s.Storage.List(ctx, prefix)
}
