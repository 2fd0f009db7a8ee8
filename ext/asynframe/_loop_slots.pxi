# Included by _loop_c.pyx (one extension module, split for reading).
#
# What three dictionary lookups per event found, kept per descriptor.
#
# Every event asks: who was registered for this fd (poller.known[fd]), is
# that still the map's channel (socket_map[fd]), and what is the channel's
# record (its instance dict's _RECORD_KEY).  On a request/response load the
# answers are the same message after message, and the three lookups were
# about 7% of the loop's instructions per message, each touching the dict's
# index and entry lines again after the syscalls had evicted them.
#
# A slot keeps each answer with the version (PEP 509, _versions.h) of the
# dict it came from, at the time it was read.  Versions come from one
# counter shared by all dicts, so an equal version means the same dict,
# unchanged since: the answer still holds, and the object it points to is
# still alive, since that dict holds it.  That is why a slot may hold
# borrowed pointers and keeps nothing alive, so a closed channel goes when
# it would have gone anyway.  Where there is no version (free-threaded
# builds, CPython 3.14) every event looks up as before.
#
# One table per poller (poller.fd_slots), shared by nested dispatches of it:
# a slot is only read after its version is checked, and never held across a
# call that may grow the table.

DEF SLOTS_LIMIT = 65536  # descriptors above this are always looked up


cdef struct _FdSlot:
    unsigned long long known_version  # known's version when entry was read, 0: never
    PyObject *entry                   # known.get(fd) then (NULL: absent)
    unsigned long long map_version    # the socket map's version when mapped was read
    PyObject *mapped                  # socket_map.get(fd) then
    unsigned long long attrs_version  # attrs' version when rec was read
    PyObject *attrs                   # the channel's instance dict
    PyObject *rec                     # attrs.get(_RECORD_KEY) then


@cython.final
cdef class _FdSlots:
    cdef _FdSlot *slots
    cdef Py_ssize_t size

    def __dealloc__(self):
        free(self.slots)

    cdef _FdSlot *grown(self, long fd) noexcept:
        # fd's slot, growing the table to hold it; NULL if it cannot
        # (out of range, or no memory: the caller then looks up, as without)
        cdef Py_ssize_t size
        cdef _FdSlot *slots
        if fd < 0 or fd >= SLOTS_LIMIT:
            return NULL
        if fd >= self.size:
            size = max(fd + 1, 2 * self.size, 64)
            if size > SLOTS_LIMIT:
                size = SLOTS_LIMIT
            slots = <_FdSlot *>realloc(self.slots, size * sizeof(_FdSlot))
            if slots == NULL:
                return NULL
            memset(&slots[self.size], 0, (size - self.size) * sizeof(_FdSlot))
            self.slots = slots
            self.size = size
        return &self.slots[fd]

    cdef inline _FdSlot *at(self, long fd) noexcept:
        # fd's slot if the table holds one, else NULL (never grows)
        if fd < 0 or fd >= self.size:
            return NULL
        return &self.slots[fd]


cdef _FdSlots _slots_of(object poller):
    cdef _FdSlots slots = getattr(poller, "fd_slots", None)
    if slots is None:
        slots = _FdSlots()
        poller.fd_slots = slots
    return slots


cdef inline PyObject *_lookup_kept(object table, object key, unsigned long long *kept_version,
                                   PyObject **kept):
    # table.get(key) (borrowed), from *kept* while table's version is still
    # *kept_version*; else looked up and kept, when the lookup left table
    # as it found it (a key's __eq__ may run Python code)
    cdef unsigned long long version = af_dict_version(<PyObject *>table)
    cdef PyObject *found
    if version != 0 and kept_version[0] == version:
        return kept[0]
    found = _lookup(table, key)
    if version != 0 and af_dict_version(<PyObject *>table) == version:
        kept_version[0] = version
        kept[0] = found
    return found
