/*
 * KVM probe: a 512-byte real-mode boot sector with a known exit mix.
 * SeaBIOS loads it at 0x7c00.  It enables interrupts and halts; every BIOS
 * timer tick (IRQ0) wakes it, and after each wake-up it executes COUNT
 * instructions that each cause one VM exit, then halts again.
 *
 * Assemble with: as --32 --defsym VARIANT=n --defsym COUNT=n
 *   VARIANT 0  hlt:   nothing but sti; hlt
 *   VARIANT 1  pio:   COUNT x `outb %al, $0x80` (POST port, ignored by QEMU)
 *   VARIANT 2  mmio:  COUNT x byte store to 0x80000000, an unassigned
 *                     address in the PCI hole (no KVM memslot: every store
 *                     exits to QEMU, which drops it).  Reaching it from real
 *                     mode takes "unreal mode": %fs keeps a 4 GiB limit
 *                     from a brief switch to protected mode.  (Everything
 *                     below 1 MiB is RAM or ROM in this guest, and stores to
 *                     the write-protected ROM did not exit under PVM.)
 *   VARIANT 3  cpuid: COUNT x cpuid (leaf 0)
 */
    .code16
    .text
    .globl _start
_start:
    cli
    xorw    %ax, %ax
    movw    %ax, %ds
    movw    %ax, %ss
    movw    $0x7c00, %sp
.if VARIANT == 2
    lgdtl   gdt_desc                /* unreal mode: %fs base 0, limit 4 GiB */
    movl    %cr0, %eax
    orb     $1, %al
    movl    %eax, %cr0
    ljmp    $0x10, $pm16            /* 16-bit protected mode */
pm16:
    movw    $8, %bx
    movw    %bx, %fs
    andb    $0xfe, %al
    movl    %eax, %cr0
    ljmp    $0, $rm16               /* back to real mode; %fs keeps its cache */
rm16:
.endif
    sti
wake:
    hlt
.if VARIANT == 1
    movw    $COUNT, %si
1:  outb    %al, $0x80
    decw    %si
    jnz     1b
.endif
.if VARIANT == 2
    movw    $COUNT, %si
    movl    $0x80000000, %edi
1:  addr32 movb %al, %fs:(%edi)
    decw    %si
    jnz     1b
.endif
.if VARIANT == 3
    movw    $COUNT, %si
1:  xorl    %eax, %eax
    cpuid
    decw    %si
    jnz     1b
.endif
    jmp     wake

.if VARIANT == 2
    .p2align 3
gdt:
    .quad   0
    .quad   0x00cf92000000ffff      /* 0x08 data: base 0, limit 4 GiB, writable */
    .quad   0x00009a000000ffff      /* 0x10 code: base 0, limit 64 KiB, 16-bit */
gdt_desc:
    .word   gdt_desc - gdt - 1
    .long   gdt
.endif

    .org    510
    .byte   0x55, 0xaa
