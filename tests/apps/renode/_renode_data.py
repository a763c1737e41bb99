"""Where the Renode tests find their SVDs, and a small SVD written for them."""

from __future__ import annotations

from pathlib import Path

SVD_DIR = Path(__file__).resolve().parents[2] / "data" / "svd"
SVD_NAMES = ("STM32F103xx", "nrf52840", "rp2040")

SMALL_SVD = """<?xml version="1.0" encoding="utf-8"?>
<device schemaVersion="1.3">
  <name>TESTDEV</name>
  <width>32</width><size>32</size><access>read-write</access>
  <resetValue>0</resetValue><resetMask>0xFFFFFFFF</resetMask>
  <peripherals>
    <peripheral>
      <name>TIMER0</name>
      <description>A "test" timer</description>
      <baseAddress>0x40000000</baseAddress>
      <addressBlock><offset>0</offset><size>0x800</size><usage>registers</usage></addressBlock>
      <interrupt><name>TIMER0</name><value>8</value></interrupt>
      <registers>
        <register>
          <name>CTRL</name><addressOffset>0x0</addressOffset><resetValue>0x5</resetValue>
          <fields>
            <field><name>EN</name><bitOffset>0</bitOffset><bitWidth>1</bitWidth></field>
            <field><name>MODE</name><bitRange>[3:1]</bitRange>
              <enumeratedValues>
                <enumeratedValue><name>ONESHOT</name><value>0</value></enumeratedValue>
                <enumeratedValue><name>PERIODIC</name><value>2</value></enumeratedValue>
              </enumeratedValues>
            </field>
            <field><name>PRESC</name><lsb>8</lsb><msb>15</msb><access>read-only</access></field>
          </fields>
        </register>
        <register>
          <name>STATUS</name><addressOffset>0x4</addressOffset><access>read-only</access>
          <fields>
            <field><name>IRQ</name><bitOffset>0</bitOffset><bitWidth>1</bitWidth>
              <access>read-write</access><modifiedWriteValues>oneToClear</modifiedWriteValues>
            </field>
            <field><name>DONE</name><bitOffset>1</bitOffset><bitWidth>1</bitWidth>
              <readAction>clear</readAction></field>
          </fields>
        </register>
        <register>
          <name>CC[%s]</name><dim>3</dim><dimIncrement>4</dimIncrement>
          <addressOffset>0x10</addressOffset><resetValue>0xFFFFFFFF</resetValue>
        </register>
        <register>
          <name>ALT</name><alternateRegister>CTRL</alternateRegister>
          <addressOffset>0x0</addressOffset>
        </register>
        <register>
          <name>FLAGS</name><addressOffset>0x20</addressOffset>
          <fields>
            <field><name>F%s</name><dim>4</dim><dimIncrement>2</dimIncrement>
              <dimIndex>0-3</dimIndex><bitOffset>0</bitOffset><bitWidth>1</bitWidth></field>
          </fields>
        </register>
        <cluster>
          <dim>2</dim><dimIncrement>0x40</dimIncrement>
          <name>CH[%s]</name><addressOffset>0x100</addressOffset>
          <register><name>CFG</name><addressOffset>0x0</addressOffset>
            <resetValue>0x1</resetValue></register>
          <cluster>
            <name>INNER</name><addressOffset>0x10</addressOffset>
            <register><name>VAL</name><addressOffset>0x4</addressOffset></register>
          </cluster>
        </cluster>
      </registers>
    </peripheral>
    <peripheral derivedFrom="TIMER0">
      <name>TIMER1</name><baseAddress>0x40001000</baseAddress>
    </peripheral>
  </peripherals>
</device>
"""
